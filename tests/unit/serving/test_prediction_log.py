"""The prediction log's encoding (one record per Predict, one batch per request) and its
bounded, lingering buffer counted in rows."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from driftline.contracts.messages import PredictionRecord, prediction_records
from driftline.model_runtimes import FeatureBatch, Predictions
from driftline.model_runtimes.river_runtime import RiverRuntime
from driftline.serving import prediction_log
from driftline.serving.loaded_model import LoadedModel
from driftline.serving.prediction_log import (
    PendingBatch,
    PendingPrediction,
    PredictionLog,
    encode_batch,
    encode_prediction,
    records_of,
)

from .conftest import LOAN_TYPES, SPEC

pytestmark = pytest.mark.unit


def _pending(model: LoadedModel, features: dict[str, Any], **kw: Any) -> PendingPrediction:
    defaults: dict[str, Any] = {
        "request_id": "req-1",
        "event_id": "ev-1",
        "entity_id": "customer-ü",
        "model": model,
        "variant": "champion",
        "features": features,
        "prediction": 1,
        "probabilities": {"0": 0.25, "1": 0.75},
        "latency_ms": 1.5,
        "served_at": 1_700_000_000.123456,
    }
    defaults.update(kw)
    return PendingPrediction(**defaults)


def test_encoded_record_is_the_contract_record(
    tree_pipeline: Any, make_model: Callable[..., LoadedModel], rows: list[dict[str, Any]]
) -> None:
    model = make_model(tree_pipeline, 3)
    [encoded] = encode_prediction(_pending(model, rows[0]))
    record = PredictionRecord.model_validate_json(encoded.value)
    assert encoded.key == "customer-ü".encode()
    assert record.model_dump(exclude={"served_at"}) == {
        "request_id": "req-1",
        "event_id": "ev-1",
        "entity_id": "customer-ü",
        "model_name": "loans-risk",
        "model_version": 3,
        "variant": "champion",
        "shadow": False,
        "features": rows[0],
        "prediction": 1,
        "probabilities": {"0": 0.25, "1": 0.75},
        "latency_ms": 1.5,
    }
    assert record.served_at.timestamp() == pytest.approx(1_700_000_000.123456, abs=1e-6)


def test_non_finite_and_numpy_values_are_written_as_json_can_hold_them(
    tree_pipeline: Any, make_model: Callable[..., LoadedModel]
) -> None:
    model = make_model(tree_pipeline, 1)
    features = {"salary": math.nan, "loan": np.float64(2.5), "age": np.int64(41)}
    [record] = records_of(_pending(model, features, prediction=np.int64(0)))
    assert record.features == {"salary": None, "loan": 2.5, "age": 41}
    assert record.prediction == 0


def test_a_value_json_cannot_hold_is_refused(
    tree_pipeline: Any, make_model: Callable[..., LoadedModel]
) -> None:
    model = make_model(tree_pipeline, 1)
    with pytest.raises(TypeError):
        encode_prediction(_pending(model, {"salary": object()}))


def test_shadow_record_follows_the_answered_one(
    tree_pipeline: Any,
    other_pipeline: Any,
    make_model: Callable[..., LoadedModel],
    rows: list[dict[str, Any]],
) -> None:
    champion, shadow = make_model(tree_pipeline, 1), make_model(other_pipeline, 2)
    answered, logged = records_of(_pending(champion, rows[1], shadow=shadow))
    assert (answered.shadow, answered.model_version, answered.variant) == (False, 1, "champion")
    assert (logged.shadow, logged.model_version, logged.variant) == (True, 2, "shadow")
    prediction, probabilities = shadow.score(dict(rows[1]))
    assert logged.prediction == prediction and logged.probabilities == probabilities
    assert logged.request_id == answered.request_id and logged.features == answered.features


async def test_take_lingers_to_gather_a_trickle_into_one_batch(
    tree_pipeline: Any, make_model: Callable[..., LoadedModel]
) -> None:
    model = make_model(tree_pipeline, 1)
    log = PredictionLog(100)

    async def trickle() -> None:
        for i in range(5):
            log.offer(_pending(model, {}, request_id=f"r{i}"))
            await asyncio.sleep(0.01)

    producer = asyncio.create_task(trickle())
    batch = await log.take(50, timeout_s=5, linger_s=0.3)
    await producer
    assert [p.request_id for p in batch] == [f"r{i}" for i in range(5)]


async def test_take_does_not_linger_once_a_batch_is_full(
    tree_pipeline: Any, make_model: Callable[..., LoadedModel]
) -> None:
    model = make_model(tree_pipeline, 1)
    log = PredictionLog(100)
    for i in range(10):
        log.offer(_pending(model, {}, request_id=f"r{i}"))
    # An hour's linger would trip the wait_for if take() waited for it.
    batch = await asyncio.wait_for(log.take(4, timeout_s=5, linger_s=3600), 60)
    assert [p.request_id for p in batch] == ["r0", "r1", "r2", "r3"]


# -- batches: one entry (and one record) per request ---------------------------------------


def _sklearn_model(rows: list[dict[str, Any]]) -> LoadedModel:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.array([[r[n] for n in LOAN_TYPES] for r in rows], dtype=np.float64)
    y = (x[:, 0] > np.median(x[:, 0])).astype(np.int64)
    fitted = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    return LoadedModel.build(
        "loans-risk", 5, fitted, spec=SPEC, feature_types=LOAN_TYPES, framework="sklearn"
    )


def _batch_of(
    model: LoadedModel, rows: list[dict[str, Any]], **kw: Any
) -> tuple[PendingBatch, FeatureBatch]:
    """A ModelInfer-like entry: the rows as columns, predicted with one call."""
    columns = {n: [r[n] for r in rows] for n in model.feature_names}
    features = FeatureBatch.from_columns(columns, len(rows), model.feature_names)
    fields: dict[str, Any] = {
        "request_id": "req-9",
        "model": model,
        "variant": "champion",
        "features": features,
        "predictions": model.predict(features),
        "latency_ms": 3.25,
        "served_at": 1_700_000_000.5,
    }
    fields.update(kw)
    return PendingBatch(**fields), features


@pytest.mark.parametrize("framework", ["river", "sklearn"])
def test_a_batch_is_one_record_equal_to_the_per_row_records(
    framework: str,
    tree_pipeline: Any,
    make_model: Callable[..., LoadedModel],
    rows: list[dict[str, Any]],
) -> None:
    model = make_model(tree_pipeline, 3) if framework == "river" else _sklearn_model(rows)
    entities = [f"c-{i}" for i in range(256)]
    entry, features = _batch_of(model, rows[:256], entity_ids=entities)
    [encoded] = encode_batch(entry)
    assert (encoded.key, encoded.rows, encoded.shadow) == (b"req-9", 256, False)
    # What the per-row path wrote for the same answers: one record per row.
    per_row = [
        r
        for i, x in enumerate(features.rows())
        for r in records_of(
            _pending(
                model,
                x,
                request_id=f"req-9/{i}",
                event_id=None,
                entity_id=entities[i],
                prediction=entry.predictions.scored(i)[0],
                probabilities=entry.predictions.scored(i)[1],
                latency_ms=3.25,
                served_at=1_700_000_000.5,
            )
        )
    ]
    assert prediction_records(encoded.value) == per_row
    assert len({r.prediction for r in per_row}) == 2  # both classes: the check means something


def test_a_batch_writes_nan_as_null_and_numpy_columns_as_json_can_hold_them(
    tree_pipeline: Any, make_model: Callable[..., LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model(tree_pipeline, 1)
    features = FeatureBatch.from_columns(
        {"salary": [math.nan, 5.0], "age": np.array([41, 42], dtype=np.int64)}, 2, ("salary", "age")
    )
    predictions = Predictions(
        [np.int64(1), 0], np.array([[0.25, 0.75], [math.nan, math.inf]]), ("0", "1")
    )
    entry = PendingBatch("r", model, "champion", features, predictions, 1.0, 1_700_000_000.0)
    for encode in ("orjson", "stdlib"):
        if encode == "stdlib":
            monkeypatch.setattr(prediction_log, "_json", prediction_log._stdlib_json)
        [encoded] = encode_batch(entry)
        assert b"NaN" not in encoded.value and b"Infinity" not in encoded.value
        first, second = prediction_records(encoded.value)
        assert (first.features, first.prediction) == ({"age": 41}, 1)
        assert first.probabilities == {"0": 0.25, "1": 0.75}
        assert (second.features, second.probabilities) == ({"salary": 5.0, "age": 42}, {})


class CountingRiver(RiverRuntime):
    """River counting its ``predict`` calls (rows per call)."""

    def __init__(self, model: Any, signature: Any) -> None:
        super().__init__(model, signature)
        self.calls: list[int] = []

    def predict(self, batch: FeatureBatch) -> Predictions:
        self.calls.append(batch.n)
        return super().predict(batch)


def test_the_shadow_scores_a_batch_with_one_call_and_writes_one_batch(
    tree_pipeline: Any,
    other_pipeline: Any,
    make_model: Callable[..., LoadedModel],
    rows: list[dict[str, Any]],
) -> None:
    champion = make_model(tree_pipeline, 1)
    plain = make_model(other_pipeline, 2)
    runtime = CountingRiver(other_pipeline, plain.runtime.signature)
    shadow = LoadedModel.of_runtime("loans-risk", 2, runtime, featureset="loans")
    entry, features = _batch_of(champion, rows[:100], shadow=shadow)
    answered, logged = encode_batch(entry)
    assert runtime.calls == [100]
    assert (answered.shadow, logged.shadow, logged.rows, logged.key) == (False, True, 100, b"req-9")
    records = prediction_records(logged.value)
    assert {(r.shadow, r.variant, r.model_version) for r in records} == {(True, "shadow", 2)}
    assert [(r.prediction, r.probabilities) for r in records] == [
        shadow.score(x) for x in features.rows()
    ]
    assert [r.features for r in records] == [r.features for r in prediction_records(answered.value)]


def test_a_failing_shadow_leaves_the_answered_batch(
    tree_pipeline: Any, make_model: Callable[..., LoadedModel], rows: list[dict[str, Any]]
) -> None:
    champion = make_model(tree_pipeline, 1)
    broken = LoadedModel.build(
        "loans-risk", 2, object(), spec=SPEC, feature_types=LOAN_TYPES, framework="python"
    )
    entry, _ = _batch_of(champion, rows[:10], shadow=broken)
    [answered] = encode_batch(entry)
    assert len(prediction_records(answered.value)) == 10


def test_a_batch_larger_than_a_record_may_be_is_split_keeping_every_row(
    tree_pipeline: Any, make_model: Callable[..., LoadedModel], rows: list[dict[str, Any]]
) -> None:
    model = make_model(tree_pipeline, 1)
    entry, _ = _batch_of(model, rows[:300])
    [whole] = encode_batch(entry)
    parts = encode_batch(entry, max_bytes=len(whole.value) // 4)
    assert len(parts) > 4
    assert all(len(p.value) <= len(whole.value) // 4 and p.key == b"req-9" for p in parts)
    assert sum(p.rows for p in parts) == 300
    assert [r for p in parts for r in prediction_records(p.value)] == prediction_records(
        whole.value
    )


def test_a_batch_value_json_cannot_hold_is_refused(
    tree_pipeline: Any, make_model: Callable[..., LoadedModel], rows: list[dict[str, Any]]
) -> None:
    model = make_model(tree_pipeline, 1)
    entry, _ = _batch_of(model, rows[:3], entity_ids=["a", object(), "c"])
    with pytest.raises(TypeError):
        encode_batch(entry)


def test_capacity_and_take_count_rows(
    tree_pipeline: Any, make_model: Callable[..., LoadedModel], rows: list[dict[str, Any]]
) -> None:
    model = make_model(tree_pipeline, 1)
    drops: list[tuple[str, int]] = []
    log = PredictionLog(300, on_drop=lambda reason, n: drops.append((reason, n)))
    big, _ = _batch_of(model, rows[:256])
    assert log.offer(big) and log.offer(_pending(model, {}))
    assert log.offer(big)  # 257 rows wait: fewer than 300, taken whole
    assert not log.offer(_pending(model, {}))
    assert (len(log), log.entries, log.accepted, drops) == (513, 3, 513, [("buffer_full", 1)])

    async def take(max_rows: int) -> list[int]:
        return [e.rows for e in await log.take(max_rows, timeout_s=0)]

    # Up to max_rows rows, but always one entry, whatever its size.
    assert asyncio.run(take(100)) == [256]
    assert asyncio.run(take(300)) == [1, 256]
    assert len(log) == 0
