"""Where online features come from: the interface, and the FeatureStore gRPC client.

The core only sees :class:`FeatureSource`; :class:`GrpcFeatureSource` reads
``driftline.v1.FeatureStore`` over one persistent channel with a deadline per
call. Unit tests use an in-memory source.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from opentelemetry import propagate

from driftline.contracts.errors import (
    DeadlineExceededError,
    DriftlineError,
    FailedPreconditionError,
    NotFoundError,
    UnavailableError,
)
from driftline.serving.loaded_model import FeatureDatatype
from driftline.v1 import common_pb2, feature_store_pb2, feature_store_pb2_grpc

__all__ = [
    "FeatureSource",
    "FeatureStatusName",
    "GrpcFeatureSource",
    "OnlineValue",
    "value_from_pb",
]

FeatureStatusName = Literal["PRESENT", "MISSING", "STALE"]


@dataclass(frozen=True, slots=True)
class OnlineValue:
    """One online feature of one entity as read: value (``None`` unless PRESENT), status, age."""

    value: Any
    status: FeatureStatusName
    age_ms: int = 0


MISSING = OnlineValue(None, "MISSING", 0)
"""What a feature the store did not return counts as."""


class FeatureSource(abc.ABC):
    """Reads online features for a batch of entities."""

    @abc.abstractmethod
    async def online(
        self,
        featureset: str,
        entity_ids: Sequence[str],
        feature_names: Sequence[str],
        timeout_s: float,
    ) -> list[dict[str, OnlineValue]]:
        """One mapping per entity id (in order): feature name -> value read.

        Raises :class:`UnavailableError` when the store cannot answer in time,
        :class:`NotFoundError` for an unknown feature set.
        """

    @abc.abstractmethod
    async def feature_types(self, featureset: str) -> dict[str, FeatureDatatype]:
        """The declared OIP datatype of every feature of ``featureset`` (empty if unknown)."""


_STATUS: dict[int, FeatureStatusName] = {
    common_pb2.FEATURE_STATUS_PRESENT: "PRESENT",
    common_pb2.FEATURE_STATUS_MISSING: "MISSING",
    common_pb2.FEATURE_STATUS_STALE: "STALE",
}
_DATATYPES: dict[int, FeatureDatatype] = {
    feature_store_pb2.FEATURE_TYPE_DOUBLE: "FP64",
    feature_store_pb2.FEATURE_TYPE_INT64: "INT64",
    feature_store_pb2.FEATURE_TYPE_STRING: "BYTES",
    feature_store_pb2.FEATURE_TYPE_BOOL: "BOOL",
}


def value_from_pb(v: common_pb2.Value) -> Any:
    """The Python scalar of a ``driftline.v1.Value`` (``None`` when unset)."""
    kind = v.WhichOneof("kind")
    return None if kind is None else getattr(v, kind)


class GrpcFeatureSource(FeatureSource):
    """``FeatureStore`` over a channel the caller owns (one persistent channel per process).

    The current trace context travels in the call metadata, so the feature
    store's span joins the prediction's trace.
    """

    def __init__(self, channel: grpc.aio.Channel, target: str = "") -> None:
        self._stub = feature_store_pb2_grpc.FeatureStoreStub(channel)
        self._target = target
        self._types: dict[str, dict[str, FeatureDatatype]] = {}

    async def online(
        self,
        featureset: str,
        entity_ids: Sequence[str],
        feature_names: Sequence[str],
        timeout_s: float,
    ) -> list[dict[str, OnlineValue]]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        request = feature_store_pb2.GetOnlineFeaturesRequest(
            featureset=featureset, entity_ids=entity_ids, feature_names=feature_names
        )
        try:
            response = await self._stub.GetOnlineFeatures(
                request, timeout=timeout_s, metadata=tuple(carrier.items()) or None
            )
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc, featureset, timeout_s) from exc
        out: list[dict[str, OnlineValue]] = []
        status_of = _STATUS.get
        for entity in response.entities:
            row: dict[str, OnlineValue] = {}
            for fv in entity.features:
                status = status_of(fv.status, "MISSING")
                if status == "PRESENT":
                    row[fv.name] = OnlineValue(value_from_pb(fv.value), status, fv.age_ms)
                else:
                    row[fv.name] = OnlineValue(None, status, fv.age_ms)
            out.append(row)
        if len(out) != len(entity_ids):
            raise UnavailableError(
                f"feature store at {self._target} answered {len(out)} entities for "
                f"{len(entity_ids)} asked; it does not follow the FeatureStore contract"
            )
        return out

    async def feature_types(self, featureset: str) -> dict[str, FeatureDatatype]:
        if featureset in self._types:
            return self._types[featureset]
        try:
            response = await self._stub.ListFeatureSets(
                feature_store_pb2.ListFeatureSetsRequest(), timeout=5.0
            )
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc, featureset, 5.0) from exc
        for fs in response.featuresets:
            self._types[fs.name] = {f.name: _DATATYPES.get(f.type, "FP64") for f in fs.features}
        return self._types.get(featureset, {})

    def _translate(
        self, exc: grpc.aio.AioRpcError, featureset: str, timeout_s: float
    ) -> DriftlineError:
        code, detail = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFoundError(f"feature store: {detail}")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            # The model's spec asked for something the feature set lacks: a
            # deployment mismatch, not the caller's fault.
            return FailedPreconditionError(
                f"feature store rejected the read of feature set {featureset!r}: {detail}"
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceededError(
                f"feature store at {self._target} did not answer within {timeout_s * 1000:.0f} ms"
            )
        return UnavailableError(
            f"feature store at {self._target} is unavailable ({code.name}: {detail})"
        )


def row_of(values: Mapping[str, OnlineValue], names: Sequence[str]) -> list[OnlineValue]:
    """``values`` in the order of ``names`` (MISSING where absent)."""
    return [values.get(n, MISSING) for n in names]
