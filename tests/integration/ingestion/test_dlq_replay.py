"""Dead letters can be inspected and, after the cause is fixed, replayed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
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
    replayed = await replay_dead_letters(settings, letters)
    assert (replayed.sent, replayed.unavailable) == (10, [])

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


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


async def test_an_oversized_records_whole_original_is_read_back_and_replayed_from_its_source(
    kafka: Any, ingestion_factory: Any, tmp_path: Path
) -> None:
    """The dead letter keeps the first bytes; `dlq original` and replay reach the whole record."""
    run = uuid.uuid4().hex[:8]
    event = agrawal_events(run, 1)[0]
    event["features"]["padding"] = "x" * 300_000  # over the 64 KiB per-record limit
    big = json.dumps(event).encode()
    digest = hashlib.sha256(big).hexdigest()
    ingestion_factory()
    kcat_produce(kafka.bootstrap_servers, EVENTS, [(run, big)])

    def ours(r: Any) -> bool:
        return r.topic == DLQ.name and r.key == run.encode()

    [record] = await collect(kafka.bootstrap_servers, [DLQ], ours, want=1)
    letter = DeadLetter.model_validate_json(record.value)
    assert letter.reason is DlqReason.TOO_LARGE
    assert letter.truncated and letter.original_size == len(big)
    assert letter.original_sha256 == digest
    assert big.startswith(letter.original()) and len(letter.original()) == 64 * 1024
    assert len(record.value) < KafkaSettings().max_message_bytes

    # An outside process (the CLI) writes the whole record, read back from driftline.events.
    out = tmp_path / "original.json"
    env = {**os.environ, "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    at = f"{record.partition}:{record.offset}"
    cli = _cli(env, "dlq", "original", at, "-o", str(out))
    assert cli.returncode == 0, cli.stderr
    assert "read back from its source" in cli.stderr
    assert out.read_bytes() == big
    shown = _cli({**env, "COLUMNS": "400"}, "dlq", "show", "--reason", "too_large", "-n", "500")
    assert shown.returncode == 0, shown.stderr
    assert at in shown.stdout
    assert f"first 65,536 of {len(big):,} bytes" in shown.stdout

    # Replay sends the whole record again (still too large: a second letter of the same bytes).
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers)
    stored = [
        s
        for s in await read_dead_letters(settings, reasons=[DlqReason.TOO_LARGE])
        if s.letter.original_key == run
    ]
    replayed = await replay_dead_letters(settings, stored)
    assert (replayed.sent, replayed.unavailable) == (1, [])
    letters = await collect(kafka.bootstrap_servers, [DLQ], ours, want=2)

    def place(d: DeadLetter) -> tuple[int | None, int | None]:
        return d.source_partition, d.source_offset

    [again] = [
        d for d in map(DeadLetter.model_validate_json, (r.value for r in letters))
        if place(d) != place(letter)
    ]  # fmt: skip
    assert (again.original_sha256, again.original_size) == (digest, len(big))
