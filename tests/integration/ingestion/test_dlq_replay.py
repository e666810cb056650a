"""Dead letters can be inspected and, after the cause is fixed, replayed."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from support.records import agrawal_events, collect, kcat_produce

from driftline.contracts.messages import DeadLetter, DlqReason, ValidEvent
from driftline.contracts.topics import DLQ, EVENTS, EVENTS_VALID
from driftline.kafkaio.dlq import read_dead_letters, replay_dead_letters
from driftline.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[3]


async def test_unknown_featureset_letters_replay_once_it_is_registered(
    kafka: Any, ingestion_factory: Any, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    events = agrawal_events(run, 10)
    for e in events:
        e["featureset"] = "loans_v2"
    svc = ingestion_factory()
    kcat_produce(kafka.bootstrap_servers, EVENTS, [(run, json.dumps(e).encode()) for e in events])

    def ours_dlq(r: Any) -> bool:
        return r.topic == DLQ.name and r.key == run.encode()

    await collect(kafka.bootstrap_servers, [DLQ], ours_dlq, want=10)
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers)
    letters = [
        s
        for s in await read_dead_letters(settings, reasons=[DlqReason.UNKNOWN_FEATURESET])
        if s.letter.original_key == run
    ]
    assert len(letters) == 10
    assert all("'loans_v2' is not registered" in s.letter.detail for s in letters)
    other = await read_dead_letters(settings, reasons=[DlqReason.TOO_LARGE])
    assert all(s.letter.reason is DlqReason.TOO_LARGE for s in other)

    # The fix: register the feature set, restart ingestion with it, replay.
    fixed = tmp_path / "featuresets"
    fixed.mkdir()
    shutil.copy(ROOT / "examples" / "featuresets" / "loans.yaml", fixed / "loans.yaml")
    text = (fixed / "loans.yaml").read_text().replace("name: loans", "name: loans_v2")
    (fixed / "loans_v2.yaml").write_text(text)
    svc.proc.terminate()
    svc.proc.wait(20)
    ingestion_factory(DRIFTLINE_INGESTION__FEATURESETS_DIR=str(fixed))
    assert await replay_dead_letters(settings, letters) == 10

    def ours_valid(r: Any) -> bool:
        return r.topic == EVENTS_VALID.name and r.key.decode().startswith(f"{run}-c")

    out = await collect(kafka.bootstrap_servers, [EVENTS_VALID], ours_valid, want=10)
    valid = [ValidEvent.model_validate_json(r.value) for r in out]
    assert sorted(v.event_id for v in valid) == sorted(e["event_id"] for e in events)
    assert {v.featureset for v in valid} == {"loans_v2"}
    # The replayed records are the originals, byte for byte.
    assert {DeadLetter.encode_original(s.letter.original()) for s in letters} == {
        s.letter.original_b64 for s in letters
    }
