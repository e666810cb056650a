"""Where online features come from: the interface, and the FeatureStore gRPC client.

The core only sees :class:`FeatureSource`; :class:`GrpcFeatureSource` reads
``driftline.v1.FeatureStore`` over one persistent channel, each read with its
deadline: on one long-lived ``StreamOnlineFeatures`` stream, or with a
``GetOnlineFeatures`` call per read. Unit tests use an in-memory source.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

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

log = logging.getLogger(__name__)

FeatureStatusName = Literal["PRESENT", "MISSING", "STALE"]


class OnlineValue(NamedTuple):
    """One online feature of one entity as read: value (``None`` unless PRESENT), status, age.

    A named tuple: one is built per feature per prediction, ~3x faster than a
    frozen dataclass.
    """

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


_Key = tuple[str, tuple[str, ...]]


@dataclass(slots=True)
class _Coalesced:
    """Reads of one (feature set, feature names) that go out as one call."""

    entity_ids: list[str]
    deadline: float
    """Loop time by which the earliest caller needs its answer."""
    metadata: tuple[tuple[str, str], ...] | None
    result: asyncio.Future[list[dict[str, OnlineValue]]]
    started: bool = False


class GrpcFeatureSource(FeatureSource):
    """``FeatureStore`` over a channel the caller owns (one persistent channel per process).

    With ``stream`` (the default) every read is one message each way on one
    long-lived ``StreamOnlineFeatures`` stream (see :class:`_ReadStream`); a
    store that turns the stream down is read with ``GetOnlineFeatures`` calls,
    as every read is without ``stream``.

    Concurrent reads coalesce. Reads of the same feature names of one feature
    set go out at once while fewer than ``max_in_flight`` such reads are
    outstanding; beyond that they queue and go out together, as one read (at
    most ``max_coalesced`` entities, with the earliest of their deadlines), as
    soon as a read returns. So a lone request waits for nothing, and under load
    the per-read cost of the client, the channel and the feature store is
    shared by many requests. Each caller gets its own rows back, or the read's
    error.

    The current trace context travels with the read (in the message on the
    stream, in the call metadata of a call), so the feature store's span joins
    the prediction's trace (a coalesced read carries the first caller's).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        target: str = "",
        *,
        max_in_flight: int = 1,
        max_coalesced: int = 1000,
        stream: bool = True,
    ) -> None:
        self._stub = feature_store_pb2_grpc.FeatureStoreStub(channel)
        self._target = target
        self._use_stream = stream
        self._stream: _ReadStream | None = None
        self._types: dict[str, dict[str, FeatureDatatype]] = {}
        self._max_in_flight = max_in_flight
        self._max_coalesced = max_coalesced
        self._open: dict[_Key, _Coalesced] = {}
        """Per key, the batch still taking reads (not yet sent)."""
        self._in_flight: dict[_Key, int] = {}

    async def online(
        self,
        featureset: str,
        entity_ids: Sequence[str],
        feature_names: Sequence[str],
        timeout_s: float,
    ) -> list[dict[str, OnlineValue]]:
        key = (featureset, tuple(feature_names))
        batch = self._open.get(key)
        if batch is None and self._in_flight.get(key, 0) < self._max_in_flight:
            # Nothing to join and room for a call: send it from this task, without
            # the batch, task and shield a coalesced read needs (~25 µs saved).
            return await self._direct(key, entity_ids, timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if batch is None or len(batch.entity_ids) + len(entity_ids) > self._max_coalesced:
            if batch is not None and not batch.started:
                self._start(key, batch)  # full: send it even though calls are outstanding
            batch = _Coalesced([], deadline, _trace_metadata(), loop.create_future())
            self._open[key] = batch
            if self._in_flight.get(key, 0) < self._max_in_flight:
                self._start(key, batch)
        first = len(batch.entity_ids)
        batch.entity_ids.extend(entity_ids)
        if deadline < batch.deadline:
            batch.deadline = deadline
        # Shielded: one caller giving up (its RPC cancelled) must not cancel the read
        # the others wait for.
        rows = await asyncio.shield(batch.result)
        return rows[first : first + len(entity_ids)]

    async def _direct(
        self, key: _Key, entity_ids: Sequence[str], timeout_s: float
    ) -> list[dict[str, OnlineValue]]:
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            return await self._call(key[0], entity_ids, key[1], timeout_s, _trace_metadata())
        finally:
            self._done(key)

    def _done(self, key: _Key) -> None:
        """A call for ``key`` returned: send the reads that queued behind it."""
        self._in_flight[key] -= 1
        queued = self._open.get(key)
        if queued is not None and not queued.started:
            self._start(key, queued)

    def _start(self, key: _Key, batch: _Coalesced) -> None:
        batch.started = True
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        task = asyncio.ensure_future(self._read(key, batch))
        task.add_done_callback(_retrieved)

    async def _read(self, key: _Key, batch: _Coalesced) -> None:
        # Reads made before this task first runs (the same loop pass) still join.
        if self._open.get(key) is batch:
            del self._open[key]
        try:
            timeout_s = batch.deadline - asyncio.get_running_loop().time()
            if timeout_s <= 0:
                raise DeadlineExceededError(
                    f"no time was left to read features from {self._target} "
                    "(the feature store is answering slower than requests arrive)"
                )
            rows = await self._call(key[0], batch.entity_ids, key[1], timeout_s, batch.metadata)
        except asyncio.CancelledError:
            batch.result.cancel()
            raise
        except Exception as exc:
            # Not swallowed: every caller of this read raises it.
            batch.result.set_exception(exc)
            # Every caller may have given up already: mark the error as seen so that
            # asyncio does not also report it as never retrieved.
            batch.result.exception()
        else:
            batch.result.set_result(rows)
        finally:
            self._done(key)

    async def _call(
        self,
        featureset: str,
        entity_ids: Sequence[str],
        feature_names: Sequence[str],
        timeout_s: float,
        metadata: tuple[tuple[str, str], ...] | None,
    ) -> list[dict[str, OnlineValue]]:
        request = feature_store_pb2.GetOnlineFeaturesRequest(
            featureset=featureset, entity_ids=entity_ids, feature_names=feature_names
        )
        response = None
        refused: _StreamBroken | None = None
        if self._use_stream:
            try:
                response = await self._stream_read(request, timeout_s, metadata)
            except _StreamBroken as exc:
                refused = exc
        if response is None:
            try:
                response = await self._stub.GetOnlineFeatures(
                    request, timeout=timeout_s, metadata=metadata
                )
            except grpc.aio.AioRpcError as exc:
                raise self._translate(exc.code(), exc.details(), featureset, timeout_s) from exc
            if refused is not None and self._use_stream:  # said once
                log.warning(
                    "feature store at %s turned the read stream down (%s) but answers "
                    "GetOnlineFeatures calls: reading with calls until serving restarts",
                    self._target,
                    refused,
                )
                self._use_stream = False
        out: list[dict[str, OnlineValue]] = []
        status_of = _STATUS.get
        present = common_pb2.FEATURE_STATUS_PRESENT
        # tuple.__new__ skips the named tuple's Python-level __new__ (runs per feature).
        new = tuple.__new__
        for entity in response.entities:
            row: dict[str, OnlineValue] = {}
            for fv in entity.features:
                if fv.status == present:
                    v = fv.value
                    kind = v.WhichOneof("kind")
                    value = None if kind is None else getattr(v, kind)
                    row[fv.name] = new(OnlineValue, (value, "PRESENT", fv.age_ms))
                else:
                    status = status_of(fv.status, "MISSING")
                    row[fv.name] = new(OnlineValue, (None, status, fv.age_ms))
            out.append(row)
        if len(out) != len(entity_ids):
            raise UnavailableError(
                f"feature store at {self._target} answered {len(out)} entities for "
                f"{len(entity_ids)} asked; it does not follow the FeatureStore contract"
            )
        return out

    async def _stream_read(
        self,
        request: feature_store_pb2.GetOnlineFeaturesRequest,
        timeout_s: float,
        metadata: tuple[tuple[str, str], ...] | None,
    ) -> feature_store_pb2.GetOnlineFeaturesResponse:
        """The read over the shared stream.

        Raises :class:`_StreamBroken` when the store turned the stream down
        before it answered anything (the caller tries a call), else the read's
        error.
        """
        stream = self._stream
        if stream is None or stream.broken is not None:
            if stream is not None and stream.answered:
                # Once per working stream that ends (not per failed attempt in an outage).
                log.warning(
                    "feature read stream to %s ended after %d reads (%s); opening a new one",
                    self._target,
                    stream.answered,
                    stream.broken,
                )
            stream = self._stream = _ReadStream(self._stub)
        try:
            result = await stream.read(request, timeout_s, metadata)
        except _StreamBroken as exc:
            # A store without the stream answers UNIMPLEMENTED; a write racing that
            # answer can make it INTERNAL on this side.
            if exc.code in _REFUSED and not stream.answered:
                raise
            raise self._translate(exc.code, exc.details, request.featureset, timeout_s) from None
        except _ReadTimedOut:
            raise DeadlineExceededError(
                f"feature store at {self._target} did not answer within {timeout_s * 1000:.0f} ms"
            ) from None
        if result.code:
            code = _CODES.get(result.code, grpc.StatusCode.UNKNOWN)
            raise self._translate(code, result.message, request.featureset, timeout_s)
        return result.response

    async def close(self) -> None:
        """End the read stream (reads in flight fail UNAVAILABLE); the channel stays open."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    async def feature_types(self, featureset: str) -> dict[str, FeatureDatatype]:
        if featureset in self._types:
            return self._types[featureset]
        try:
            response = await self._stub.ListFeatureSets(
                feature_store_pb2.ListFeatureSetsRequest(), timeout=5.0
            )
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc.code(), exc.details(), featureset, 5.0) from exc
        for fs in response.featuresets:
            self._types[fs.name] = {f.name: _DATATYPES.get(f.type, "FP64") for f in fs.features}
        return self._types.get(featureset, {})

    def _translate(
        self, code: grpc.StatusCode, details: str | None, featureset: str, timeout_s: float
    ) -> DriftlineError:
        detail = details or ""
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


_CODES = {code.value[0]: code for code in grpc.StatusCode}
_REFUSED = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL)
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


class _StreamBroken(Exception):
    """The read stream ended (the store restarted, the channel closed, ...)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class _ReadTimedOut(Exception):
    """A read on the stream was not answered within its time."""


def _time_out(result: asyncio.Future[Any]) -> None:
    if not result.done():
        result.set_exception(_ReadTimedOut())


class _ReadStream:
    """One ``StreamOnlineFeatures`` stream that many reads share.

    A read is one message each way: it is queued for the one task that writes
    (a stream takes one write at a time, and a caller giving up mid-write would
    cancel the whole stream), and its result is handed over by id by the one
    task that reads. A read waits for its own time only; its deadline travels
    with it so that the store gives up a read nobody waits for any more. When the
    stream ends, every read still open on it fails with the stream's status,
    and the next read opens a new stream. A stream that answers nothing for the
    whole time of a read (a stalled connection the transport has not noticed
    yet) is ended the same way.
    """

    def __init__(self, stub: feature_store_pb2_grpc.FeatureStoreStub) -> None:
        self._loop = asyncio.get_running_loop()
        # Any: grpc-stubs types the stub's calls as the synchronous API's.
        self._call: Any = stub.StreamOnlineFeatures()  # type: ignore[call-arg]
        self._outbox: asyncio.Queue[feature_store_pb2.OnlineFeaturesRead] = asyncio.Queue()
        self._open: dict[int, asyncio.Future[feature_store_pb2.OnlineFeaturesResult]] = {}
        self._next_id = 1
        self.answered = 0
        """Results received so far."""
        self.broken: _StreamBroken | None = None
        self._writer = asyncio.ensure_future(self._write())
        self._reader = asyncio.ensure_future(self._read())
        self._writer.add_done_callback(_retrieved)
        self._reader.add_done_callback(_retrieved)

    async def read(
        self,
        request: feature_store_pb2.GetOnlineFeaturesRequest,
        timeout_s: float,
        metadata: tuple[tuple[str, str], ...] | None,
    ) -> feature_store_pb2.OnlineFeaturesResult:
        """The result of one read; raises _StreamBroken or _ReadTimedOut."""
        if self.broken is not None:
            raise _StreamBroken(self.broken.code, self.broken.details)
        read_id = self._next_id
        self._next_id += 1
        result: asyncio.Future[feature_store_pb2.OnlineFeaturesResult] = self._loop.create_future()
        self._open[read_id] = result
        self._outbox.put_nowait(
            feature_store_pb2.OnlineFeaturesRead(
                id=read_id,
                request=request,
                timeout_ms=max(1, math.ceil(timeout_s * 1000)),
                trace_context=dict(metadata) if metadata else None,
            )
        )
        timer = self._loop.call_later(timeout_s, _time_out, result)
        answers = self.answered
        try:
            return await result
        except _ReadTimedOut:
            if self.answered == answers:
                self._break(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the read stream answered nothing in {timeout_s * 1000:.0f} ms",
                )
            raise
        finally:
            timer.cancel()
            del self._open[read_id]

    async def _write(self) -> None:
        outbox, call = self._outbox, self._call
        try:
            while True:
                await call.write(await outbox.get())
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            self._break(exc.code(), exc.details() or "")
        except Exception as exc:  # the call finished under the write (InvalidStateError)
            self._break(grpc.StatusCode.UNAVAILABLE, f"the read stream ended: {exc}")

    async def _read(self) -> None:
        call, open_reads = self._call, self._open
        try:
            while True:
                result = await call.read()
                if result is _EOF:
                    self._break(grpc.StatusCode.UNAVAILABLE, "the feature store ended the stream")
                    return
                self.answered += 1
                waiting = open_reads.get(result.id)
                if waiting is not None and not waiting.done():
                    waiting.set_result(result)
        except asyncio.CancelledError:
            self._break(grpc.StatusCode.UNAVAILABLE, "the read stream was closed")
            raise
        except grpc.aio.AioRpcError as exc:
            self._break(exc.code(), exc.details() or "")

    def _break(self, code: grpc.StatusCode, details: str) -> None:
        if self.broken is None:
            self.broken = _StreamBroken(code, details)
        code, details = self.broken.code, self.broken.details
        for waiting in self._open.values():
            if not waiting.done():
                waiting.set_exception(_StreamBroken(code, details))
        self._writer.cancel()
        self._call.cancel()

    def close(self) -> None:
        """End the stream; open reads fail."""
        self._break(grpc.StatusCode.UNAVAILABLE, "the read stream was closed")
        self._reader.cancel()


def _trace_metadata() -> tuple[tuple[str, str], ...] | None:
    """The current trace context as call metadata (``traceparent``), None outside a trace."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items()) or None


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def row_of(values: Mapping[str, OnlineValue], names: Sequence[str]) -> list[OnlineValue]:
    """``values`` in the order of ``names`` (MISSING where absent)."""
    return [values.get(n, MISSING) for n in names]
