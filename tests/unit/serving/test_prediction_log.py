"""The prediction log's record encoding and its bounded, lingering buffer."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from driftline.contracts.messages import PredictionRecord
from driftline.serving.loaded_model import LoadedModel
from driftline.serving.prediction_log import (
    PendingPrediction,
    PredictionLog,
    encode_prediction,
    records_of,
)

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
