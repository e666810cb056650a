"""``driftline.predictions`` carries single records and batches; one function reads both."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from driftline.contracts.messages import (
    PredictionBatch,
    PredictionRecord,
    RawLabel,
    prediction_records,
)
from driftline.contracts.topics import PREDICTIONS
from driftline.kafkaio import send_model

AT = datetime(2026, 11, 23, 16, 0, 0, 123000, tzinfo=UTC)


def _batch(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "request_id": "req-7",
        "entity_ids": ["c-1", "c-2", "c-3"],
        "model_name": "loans",
        "model_version": 4,
        "variant": "challenger",
        "features": {"salary": [72000.0, None, 51000.5], "car": [3, 1, 2]},
        "predictions": [1, 0, None],
        "probabilities": {"0": [0.2, 0.9, None], "1": [0.8, 0.1, None]},
        "latency_ms": 2.5,
        "served_at": "2026-11-23T16:00:00.123Z",
    }
    doc.update(kw)
    return doc


def _record(i: int, **kw: Any) -> PredictionRecord:
    fields: dict[str, Any] = {
        "request_id": f"req-7/{i}",
        "entity_id": f"c-{i + 1}",
        "model_name": "loans",
        "model_version": 4,
        "variant": "challenger",
        "latency_ms": 2.5,
        "served_at": AT,
    }
    fields.update(kw)
    return PredictionRecord(**fields)


def test_a_batch_expands_into_the_records_of_its_rows() -> None:
    batch = PredictionBatch.model_validate(_batch())
    assert len(batch) == 3
    assert batch.records() == [
        _record(
            0,
            features={"salary": 72000.0, "car": 3},
            prediction=1,
            probabilities={"0": 0.2, "1": 0.8},
        ),
        # null: a missing feature, a class the model did not name for the row.
        _record(1, features={"car": 1}, prediction=0, probabilities={"0": 0.9, "1": 0.1}),
        _record(2, features={"salary": 51000.5, "car": 2}, prediction=None, probabilities={}),
    ]
    records = batch.records()
    assert type(records[0].features["car"]) is int and records[0].event_id is None


def test_explicit_row_ids_and_event_ids_are_each_rows_own() -> None:
    batch = PredictionBatch.model_validate(
        _batch(request_ids=["a", "b", "c"], event_ids=["e-1", None, "e-3"], entity_ids=None)
    )
    assert [(r.request_id, r.event_id, r.entity_id) for r in batch.records()] == [
        ("a", "e-1", ""),
        ("b", None, ""),
        ("c", "e-3", ""),
    ]


def test_a_batch_survives_the_wire_and_reads_back_as_its_records() -> None:
    batch = PredictionBatch.model_validate(_batch(shadow=True, variant="shadow"))
    wire = batch.model_dump_json().encode()
    assert PredictionBatch.model_validate_json(wire) == batch
    assert prediction_records(wire) == batch.records()
    assert {(r.shadow, r.variant) for r in prediction_records(wire)} == {(True, "shadow")}
    # A single record reads as itself, even with a feature called "predictions".
    one = _record(0, features={"predictions": 2.0}, prediction=1)
    assert prediction_records(one.model_dump_json()) == [one]


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ({"features": {"salary": [1.0, 2.0], "car": [3, 1, 2]}}, "features['salary']"),
        ({"probabilities": {"0": [0.2, 0.9, 0.5], "1": [0.8]}}, "probabilities['1']"),
        ({"entity_ids": ["c-1"]}, "entity_ids"),
        ({"request_ids": ["a", "b", "c", "d"]}, "request_ids"),
        ({"event_ids": []}, "event_ids"),
    ],
)
def test_columns_of_another_length_are_refused_naming_the_column(
    change: dict[str, Any], column: str
) -> None:
    raw = json.dumps(_batch(**change))
    with pytest.raises(ValidationError) as err:
        prediction_records(raw)
    assert f"column {column} has" in str(err.value)
    assert "for 3 predictions" in str(err.value)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b"{}",
        json.dumps(_batch(predictions=[], features={}, probabilities={}, entity_ids=None)),
        json.dumps(_batch(extra=1)),
        json.dumps(_batch(predictions=[[1]], features={}, probabilities={}, entity_ids=None)),
        json.dumps({**json.loads(_record(0, features={}, prediction=1).model_dump_json()), "x": 1}),
    ],
    ids=["not-json", "array", "empty", "no-rows", "unknown-field", "bad-label", "bad-record"],
)
def test_anything_else_is_a_validation_error(raw: bytes | str) -> None:
    with pytest.raises(ValidationError) as err:
        prediction_records(raw)
    # What a consumer's skip line says (unreadable_detail): "not a <title>: <where>: …".
    assert err.value.title == "PredictionRecord or PredictionBatch"


def test_nan_cannot_be_written_and_null_reads_as_absent() -> None:
    # JSON has no NaN: writers put null, which reads as "no value" for that row.
    batch = PredictionBatch.model_validate_json(
        json.dumps(_batch(features={"salary": [None, None, 1.0]}))
    )
    assert [r.features for r in batch.records()] == [{}, {}, {"salary": 1.0}]


async def test_the_topic_takes_both_shapes_and_nothing_else() -> None:
    assert PREDICTIONS.value_models == (PredictionRecord, PredictionBatch)

    class Producer:
        sent: list[dict[str, Any]] = []

        async def send(self, topic: str, **kw: Any) -> asyncio.Future[None]:
            self.sent.append(kw)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    producer = Producer()
    batch = PredictionBatch.model_validate(_batch())
    await send_model(producer, PREDICTIONS, batch.request_id, batch)  # type: ignore[arg-type]
    await send_model(producer, PREDICTIONS, "c-1", batch.records()[0])  # type: ignore[arg-type]
    label = RawLabel(event_id="e", entity_id="c", timestamp=AT, label=1)
    with pytest.raises(TypeError, match="carries PredictionRecord or PredictionBatch"):
        await send_model(producer, PREDICTIONS, "c", label)  # type: ignore[arg-type]
    assert [prediction_records(s["value"])[0].request_id for s in producer.sent] == [
        "req-7/0",
        "req-7/0",
    ]
    assert producer.sent[0]["key"] == b"req-7"
