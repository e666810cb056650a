"""Each feature vector names the record it came from, so its event's trace goes on with it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from river.datasets import synth

from driftline.contracts.messages import FeatureVector, ValidEvent
from driftline.features.processor import FeatureProcessor, SourceRecord
from driftline.specs import load_featuresets

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
TP = (("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)


def _record(offset: int, event_id: str, features: dict[str, Any]) -> SourceRecord:
    event = ValidEvent(
        event_id=event_id,
        entity_id="c-1",
        event_time=datetime(2026, 1, 1, 0, 0, offset, tzinfo=UTC),
        featureset="loans",
        featureset_version=1,
        features=features,
        ingested_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return SourceRecord(0, offset, b"c-1", event.model_dump_json().encode(), TP)


def test_vector_sources_point_at_the_records_vectors_were_computed_from() -> None:
    processor = FeatureProcessor(load_featuresets(ROOT / "examples" / "featuresets"))
    good = [x for x, _ in synth.Agrawal(seed=1).take(2)]
    records = [
        _record(1, "e1", good[0]),
        _record(2, "bad", {"salary": "not a number"}),  # dead-lettered: no vector
        SourceRecord(0, 3, b"c-1", b"{not json"),
        _record(4, "e4", good[1]),
    ]
    out = processor.process(records, {})
    assert len(out.dead_letters) == 2
    assert out.vector_sources == [0, 3]
    ids = [FeatureVector.model_validate_json(v).event_id for _, v in out.vectors]
    assert ids == ["e1", "e4"]
    assert records[out.vector_sources[1]].headers == TP


def test_vectors_are_what_the_contract_model_would_write() -> None:
    processor = FeatureProcessor(load_featuresets(ROOT / "examples" / "featuresets"))
    rows = [x for x, _ in synth.Agrawal(seed=3).take(3)]
    records = [_record(i, f"v{i}", rows[i]) for i in range(3)]
    # A sub-second event time: the hand-written timestamp must match it too.
    records[2] = SourceRecord(
        0,
        2,
        b"c-1",
        ValidEvent(
            event_id="v2",
            entity_id="c-1",
            event_time=datetime(2026, 1, 1, 0, 0, 2, 123456, tzinfo=UTC),
            featureset="loans",
            featureset_version=1,
            features=rows[2],
            ingested_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        .model_dump_json()
        .encode(),
    )
    out = processor.process(records, {})
    assert len(out.vectors) == 3
    for (entity, raw), row in zip(out.vectors, rows, strict=True):
        vector = FeatureVector.model_validate_json(raw)
        assert entity == vector.entity_id == "c-1"
        # Byte for byte what pydantic's serialiser gives for the same vector.
        assert raw == vector.model_dump_json().encode()
        for name, value in row.items():
            assert vector.values[name] == value
            assert type(vector.values[name]) is type(value)
    last = FeatureVector.model_validate_json(out.vectors[2][1])
    assert last.event_time == datetime(2026, 1, 1, 0, 0, 2, 123456, tzinfo=UTC)
    assert last.values["count_1h"] == 3
