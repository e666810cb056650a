"""``driftline.v1.Predictor`` over gRPC: protobuf in, :class:`ServingCore`, protobuf out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from driftline.contracts.errors import InvalidArgumentError
from driftline.serving.core import PredictCall, PredictOutcome, ServingCore
from driftline.serving.feature_source import value_from_pb
from driftline.serving.model_table import ServedModel
from driftline.serving.rpc_observer import observed, timeout_of
from driftline.serving.serving_metrics import ServingMetrics
from driftline.v1 import common_pb2, predictor_pb2, predictor_pb2_grpc

__all__ = ["PredictorService", "value_to_pb"]

_SERVICE = "driftline.v1.Predictor"
_STATUS = {
    "PRESENT": common_pb2.FEATURE_STATUS_PRESENT,
    "MISSING": common_pb2.FEATURE_STATUS_MISSING,
    "STALE": common_pb2.FEATURE_STATUS_STALE,
}


def value_to_pb(value: Any) -> common_pb2.Value:
    """A ``driftline.v1.Value`` of a Python scalar (unset for ``None``)."""
    if value is None:
        return common_pb2.Value()
    if isinstance(value, bool):
        return common_pb2.Value(bool_value=value)
    if isinstance(value, int):
        return common_pb2.Value(int64_value=value)
    if isinstance(value, float):
        return common_pb2.Value(double_value=value)
    return common_pb2.Value(string_value=str(value))


def call_of(request: predictor_pb2.PredictRequest) -> PredictCall:
    """The core's view of a PredictRequest."""
    target = request.WhichOneof("target")
    return PredictCall(
        entity_id=request.entity_id,
        model_name=request.model_name,
        features={k: value_from_pb(v) for k, v in request.features.items()},
        event_id=request.event_id if request.HasField("event_id") else None,
        alias=request.alias if target == "alias" else None,
        version=request.version if target == "version" else None,
        request_id=request.request_id,
    )


def _set_value(target: common_pb2.Value, value: Any) -> None:
    """Set ``target`` (a fresh, unset Value) to a Python scalar; ``None`` leaves it unset."""
    kind = type(value)
    if kind is float:
        target.double_value = value
    elif kind is int:
        target.int64_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is str:
        target.string_value = value
    elif value is not None:
        target.CopyFrom(value_to_pb(value))


def response_of(o: PredictOutcome) -> predictor_pb2.PredictResponse:
    """The PredictResponse of an answered prediction.

    Filled in place (maps updated, values set on the map's own entries): half
    the cost of building every Value first and copying it in (13 against 24 µs).
    """
    response = predictor_pb2.PredictResponse(
        request_id=o.request_id,
        model_name=o.model.name,
        model_version=o.model.version,
        variant=o.variant,
    )
    _set_value(response.prediction, o.prediction)
    response.probabilities.update(o.probabilities)
    merged = o.merged
    response.feature_ages_ms.update(merged.ages_ms)
    response.feature_status.update({k: _STATUS[s] for k, s in merged.status.items()})
    features = response.features
    for name, value in merged.x.items():
        _set_value(features[name], value)
    served = response.served_at
    served.seconds, micros = divmod(round(o.served_at * 1e6), 1_000_000)
    served.nanos = micros * 1000
    if o.event_id is not None:
        response.event_id = o.event_id
    return response


def canary_of(served: ServedModel) -> predictor_pb2.CanaryConfig:
    """The CanaryConfig message of a served model's canary."""
    c = served.canary
    config = predictor_pb2.CanaryConfig(
        model_name=served.name, percent=c.percent, alias=c.alias, updated_by=c.updated_by
    )
    target = served.aliases.get(c.alias)
    if target is not None:
        config.version = target.version
    if c.updated_at is not None:
        config.updated_at.FromDatetime(c.updated_at)
    return config


class PredictorService(predictor_pb2_grpc.PredictorServicer):
    """The Predictor servicer; all logic is in the core."""

    def __init__(self, core: ServingCore, metrics: ServingMetrics) -> None:
        self.core = core
        self.metrics = metrics

    def _count(self, outcomes: list[PredictOutcome]) -> None:
        predicted = self.metrics.predicted
        for o in outcomes:
            predicted(o.model.name, o.variant)

    @observed(_SERVICE, "Predict")
    async def Predict(
        self,
        request: predictor_pb2.PredictRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> predictor_pb2.PredictResponse:
        outcomes = await self.core.predict([call_of(request)], timeout_s=timeout_of(context))
        self._count(outcomes)
        return response_of(outcomes[0])

    @observed(_SERVICE, "PredictBatch")
    async def PredictBatch(
        self,
        request: predictor_pb2.PredictBatchRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> predictor_pb2.PredictBatchResponse:
        calls = [call_of(r) for r in request.requests]
        outcomes = await self.core.predict(calls, timeout_s=timeout_of(context), batch=True)
        self._count(outcomes)
        return predictor_pb2.PredictBatchResponse(responses=[response_of(o) for o in outcomes])

    @observed(_SERVICE, "SetCanary")
    async def SetCanary(
        self,
        request: predictor_pb2.SetCanaryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> predictor_pb2.CanaryConfig:
        if not request.model_name:
            raise InvalidArgumentError("model_name is required")
        served = self.core.set_canary(
            request.model_name,
            request.percent,
            request.alias,
            actor=request.actor,
            reason=request.reason,
        )
        return canary_of(served)

    @observed(_SERVICE, "GetCanary")
    async def GetCanary(
        self,
        request: predictor_pb2.GetCanaryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> predictor_pb2.CanaryConfig:
        return canary_of(self.core.table.get(request.model_name))


def features_pb(features: Mapping[str, Any]) -> dict[str, common_pb2.Value]:
    """``map<string, Value>`` of request-time features (for clients and tests)."""
    return {k: value_to_pb(v) for k, v in features.items()}
