from __future__ import annotations

import json
from pathlib import Path

import pytest
from river.datasets import synth

from driftline.contracts.messages import DlqReason, ValidEvent, ValidLabel
from driftline.ingestion.core import Accepted, Incoming, IngestionCore, Rejected, Source
from driftline.ingestion.dedup import InMemoryDedupStore
from driftline.specs import load_featuresets

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "featuresets"


def core(max_bytes: int = 4096) -> IngestionCore:
    return IngestionCore(
        load_featuresets(EXAMPLES), InMemoryDedupStore(3600), max_record_bytes=max_bytes
    )


def event(i: int, **features: object) -> dict[str, object]:
    base: dict[str, object] = {
        "salary": 50000.0,
        "commission": 12000.0,
        "age": 41,
        "elevel": 2,
        "car": 3,
        "zipcode": 4,
        "hvalue": 300000.0,
        "hyears": 10,
        "loan": 120000.0,
    }
    base.update(features)
    return {
        "event_id": f"e-{i}",
        "entity_id": f"c-{i % 7}",
        "timestamp": "2026-11-23T16:00:00Z",
        "featureset": "loans",
        "features": base,
    }


def kafka_item(value: bytes | None, offset: int, kind: str = "event") -> Incoming:
    return Incoming(
        value,
        b"k",
        Source(
            kind=kind,
            via="kafka",
            owner=f"t:0:{offset}",  # type: ignore[arg-type]
            topic="t",
            partition=0,
            offset=offset,
        ),
    )


async def classify(*payloads: bytes | None, kind: str = "event") -> list[Accepted | Rejected]:
    return await core().process([kafka_item(p, i, kind) for i, p in enumerate(payloads)])


async def test_every_agrawal_record_is_accepted_as_is() -> None:
    c = core()
    items = []
    for i, (x, _) in enumerate(synth.Agrawal(seed=3, perturbation=0.2).take(2000)):
        doc = {"event_id": f"a-{i}", "entity_id": "c", "timestamp": i * 1000, "features": x}
        items.append(kafka_item(json.dumps(doc).encode(), i))
    outcomes = await c.process(items)
    assert all(isinstance(o, Accepted) for o in outcomes)
    first = outcomes[0]
    assert isinstance(first, Accepted) and isinstance(first.record, ValidEvent)
    assert first.record.featureset == "loans" and first.record.featureset_version == 1
    assert first.key == "c"


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b'{"event_id": "e-1", "entity_id"', DlqReason.UNPARSEABLE, "not JSON"),
        (b"\xff\xfe\x00garbage", DlqReason.UNPARSEABLE, "not UTF-8"),
        (b"[1, 2, 3]", DlqReason.UNPARSEABLE, "expected a JSON object"),
        (b"", DlqReason.UNPARSEABLE, "not JSON"),
        (None, DlqReason.UNPARSEABLE, "not JSON"),
        (json.dumps({"event_id": "e"}).encode(), DlqReason.SCHEMA, "entity_id"),
        (json.dumps(event(1, age="old")).encode(), DlqReason.SCHEMA, "age: expected int"),
        (json.dumps(event(1, age=True)).encode(), DlqReason.SCHEMA, "age: expected int"),
        (json.dumps(event(1, colour="red")).encode(), DlqReason.SCHEMA, "no field 'colour'"),
        (json.dumps(event(1, loan=None)).encode(), DlqReason.SCHEMA, "loan is required"),
        (json.dumps(event(1, age=130)).encode(), DlqReason.CONSTRAINT, "above the maximum"),
        (json.dumps(event(1, elevel=9)).encode(), DlqReason.CONSTRAINT, "allowed values"),
        (
            b'{"event_id":"e","entity_id":"c","timestamp":1,"featureset":"loans",'
            b'"features":{"salary":NaN}}',
            DlqReason.CONSTRAINT,
            "not a finite number",
        ),
        (json.dumps(event(1, salary=float("inf"))).encode(), DlqReason.CONSTRAINT, "finite"),
        (
            json.dumps({**event(1), "featureset": "cars"}).encode(),
            DlqReason.UNKNOWN_FEATURESET,
            "'cars' is not registered",
        ),
        (
            json.dumps({**event(1), "timestamp": "yesterday"}).encode(),
            DlqReason.SCHEMA,
            "timestamp",
        ),
    ],
)
async def test_bad_records_are_dead_lettered_with_reason(
    payload: bytes | None, reason: DlqReason, detail: str
) -> None:
    [outcome] = await classify(payload)
    assert isinstance(outcome, Rejected)
    assert outcome.reason is reason
    assert detail in outcome.letter.detail
    assert outcome.letter.original() == (payload or b"")
    assert (outcome.letter.source_topic, outcome.letter.source_offset) == ("t", 0)
    assert outcome.key == "k"


async def test_oversized_record_is_too_large() -> None:
    big = json.dumps(event(1) | {"pad": "x" * 5000}).encode()
    [outcome] = await core(max_bytes=4096).process([kafka_item(big, 0)])
    assert isinstance(outcome, Rejected) and outcome.reason is DlqReason.TOO_LARGE


async def test_duplicates_inside_the_window_are_dead_lettered_but_replays_are_not() -> None:
    c = core()
    raw = json.dumps(event(1)).encode()
    first = await c.process([kafka_item(raw, 10)])
    # Same record replayed after a crash (same position): not a duplicate.
    replay = await c.process([kafka_item(raw, 10)])
    # Same event id from another position: a duplicate.
    dup = await c.process([kafka_item(raw, 11)])
    assert isinstance(first[0], Accepted) and isinstance(replay[0], Accepted)
    assert isinstance(dup[0], Rejected) and dup[0].reason is DlqReason.DUPLICATE
    assert "e-1" in dup[0].letter.detail


async def test_duplicate_within_one_batch() -> None:
    raw = json.dumps(event(5)).encode()
    outcomes = await classify(raw, raw)
    assert isinstance(outcomes[0], Accepted)
    assert isinstance(outcomes[1], Rejected) and outcomes[1].reason is DlqReason.DUPLICATE


async def test_events_and_labels_have_separate_id_spaces() -> None:
    c = core()
    ev = await c.process([kafka_item(json.dumps(event(1)).encode(), 0)])
    label = {"event_id": "e-1", "entity_id": "c-1", "timestamp": 5, "label": 1}
    lb = await c.process([kafka_item(json.dumps(label).encode(), 1, "label")])
    assert isinstance(ev[0], Accepted)
    assert isinstance(lb[0], Accepted) and isinstance(lb[0].record, ValidLabel)
    assert lb[0].record.label == 1


async def test_featureset_may_be_omitted_when_only_one_is_registered() -> None:
    doc = event(3)
    del doc["featureset"]
    [outcome] = await classify(json.dumps(doc).encode())
    assert isinstance(outcome, Accepted) and outcome.record.event_id == "e-3"


async def test_label_must_be_finite() -> None:
    [outcome] = await classify(
        b'{"event_id":"e","entity_id":"c","timestamp":1,"label":Infinity}', kind="label"
    )
    assert isinstance(outcome, Rejected) and outcome.reason is DlqReason.CONSTRAINT


async def test_order_and_count_are_preserved() -> None:
    payloads = [json.dumps(event(i)).encode() if i % 3 else b"junk" for i in range(30)]
    outcomes = await classify(*payloads)
    assert len(outcomes) == 30
    assert [isinstance(o, Rejected) for o in outcomes] == [i % 3 == 0 for i in range(30)]
