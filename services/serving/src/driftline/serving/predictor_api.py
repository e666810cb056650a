"""``driftline.v1.Predictor`` over gRPC: protobuf in, :class:`ServingCore`, protobuf out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import trace

from driftline.contracts.errors import InvalidArgumentError
from driftline.edge.server import ServerEdge, time_left
from driftline.edge.values import set_value, value_from_pb
from driftline.security.api_keys import ApiKeyGuard
from driftline.serving.core import PredictCall, PredictOutcome, ServingCore
from driftline.serving.model_table import ServedModel
from driftline.serving.serving_metrics import ServingMetrics
from driftline.v1 import common_pb2, predictor_pb2, predictor_pb2_grpc

__all__ = ["PredictorService"]

_EDGE = ServerEdge(
    "driftline.v1.Predictor", trace.get_tracer("driftline.serving"), component="serving"
)
_STATUS = {
    "PRESENT": common_pb2.FEATURE_STATUS_PRESENT,
    "MISSING": common_pb2.FEATURE_STATUS_MISSING,
    "STALE": common_pb2.FEATURE_STATUS_STALE,
}


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
    set_value(response.prediction, o.prediction)
    response.probabilities.update(o.probabilities)
    merged = o.merged
    response.feature_ages_ms.update(merged.ages_ms)
    response.feature_status.update({k: _STATUS[s] for k, s in merged.status.items()})
    features = response.features
    for name, value in merged.x.items():
        set_value(features[name], value)
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


def _open(method: str, context: Any) -> None:
    """Every caller may call (no API keys)."""


class PredictorService(predictor_pb2_grpc.PredictorServicer):
    """The Predictor servicer; all logic is in the core."""

    def __init__(
        self, core: ServingCore, metrics: ServingMetrics, keys: ApiKeyGuard | None = None
    ) -> None:
        self.core = core
        self.metrics = metrics
        self.record_rpc = metrics.observe
        # The edge asks before every call: the key check, or nothing (plaintext, no keys).
        self.authorize: Callable[[str, Any], None] = keys.authorize if keys is not None else _open

    def _count(self, outcomes: list[PredictOutcome]) -> None:
        predicted = self.metrics.predicted
        for o in outcomes:
            predicted(o.model.name, o.variant)

    @_EDGE.unary("Predict", guarded=True)
    async def Predict(
        self,
        request: predictor_pb2.PredictRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> predictor_pb2.PredictResponse:
        outcomes = await self.core.predict([call_of(request)], timeout_s=time_left(context))
        self._count(outcomes)
        return response_of(outcomes[0])

    @_EDGE.unary("PredictBatch", guarded=True)
    async def PredictBatch(
        self,
        request: predictor_pb2.PredictBatchRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> predictor_pb2.PredictBatchResponse:
        calls = [call_of(r) for r in request.requests]
        outcomes = await self.core.predict(calls, timeout_s=time_left(context), batch=True)
        self._count(outcomes)
        return predictor_pb2.PredictBatchResponse(responses=[response_of(o) for o in outcomes])

    @_EDGE.unary("SetCanary", guarded=True)
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

    @_EDGE.unary("GetCanary", guarded=True)
    async def GetCanary(
        self,
        request: predictor_pb2.GetCanaryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> predictor_pb2.CanaryConfig:
        return canary_of(self.core.table.get(request.model_name))
