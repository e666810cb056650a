"""The FeatureStore gRPC client: the transport under serving's :class:`FeatureSource`.

:class:`GrpcFeatureSource` reads ``driftline.v1.FeatureStore`` over one persistent
channel, each read with its deadline: on one long-lived ``StreamOnlineFeatures``
stream (:class:`_ReadStream`), or with a ``GetOnlineFeatures`` call per read;
concurrent reads coalesce first (:mod:`driftline.serving.feature_coalescer`). The
store answers column by column; :func:`rows_of` turns its columns into one row of
:class:`OnlineValue` per entity.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from driftline.contracts.errors import FailedPreconditionError, NotFoundError, UnavailableError
from driftline.edge.errors import STATUS_BY_NUMBER, RpcErrors
from driftline.serving.feature_coalescer import ReadCoalescer, TraceContext, mark_retrieved
from driftline.serving.feature_source import FeatureSource, FeatureStatusName, OnlineValue
from driftline.serving.loaded_model import FeatureDatatype
from driftline.v1 import common_pb2, feature_store_pb2, feature_store_pb2_grpc

__all__ = ["GrpcFeatureSource", "rows_of"]

log = logging.getLogger(__name__)

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
# The FeatureColumn array that holds the values of a feature of each type.
_VALUE_ARRAYS = {
    feature_store_pb2.FEATURE_TYPE_DOUBLE: "fp64",
    feature_store_pb2.FEATURE_TYPE_INT64: "int64",
    feature_store_pb2.FEATURE_TYPE_BOOL: "bool",
    feature_store_pb2.FEATURE_TYPE_STRING: "bytes",
}


def rows_of(
    response: feature_store_pb2.GetOnlineFeaturesResponse, entity_count: int, target: str = ""
) -> list[dict[str, OnlineValue]]:
    """The columns of a ``GetOnlineFeaturesResponse`` as one row per entity: name -> value read.

    Raises :class:`UnavailableError` when the response does not follow the
    ``FeatureStore`` contract (not ``entity_count`` entities, a column short of
    entries, a type it cannot read): serving cannot trust any of it.
    """

    def broken(why: str) -> UnavailableError:
        return UnavailableError(
            f"feature store at {target} answered {why}; it does not follow the "
            "FeatureStore contract"
        )

    if len(response.entity_ids) != entity_count:
        raise broken(f"{len(response.entity_ids)} entities for {entity_count} asked")
    if entity_count == 1:  # a prediction's read: no column-wise pass (half the time)
        return [_row_of_one(response, broken)]
    names: list[str] = []
    columns: list[list[OnlineValue]] = []
    present = common_pb2.FEATURE_STATUS_PRESENT
    status_of = _STATUS.get
    # tuple.__new__ skips the named tuple's Python-level __new__ (runs per value).
    new = tuple.__new__
    for column in response.features:
        values, column_statuses, ages = _arrays(column, entity_count, broken)
        statuses = list(column_statuses)
        if statuses.count(present) == entity_count and not column.nulls:
            cells = [new(OnlineValue, (v, "PRESENT", a)) for v, a in zip(values, ages, strict=True)]
        else:
            nulls = frozenset(column.nulls)
            cells = [
                new(OnlineValue, (None if i in nulls else v, "PRESENT", a))
                if s == present
                else new(OnlineValue, (None, status_of(s, "MISSING"), a))
                for i, (v, s, a) in enumerate(zip(values, statuses, ages, strict=True))
            ]
        names.append(column.name)
        columns.append(cells)
    if not columns:
        return [{} for _ in range(entity_count)]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _arrays(
    column: feature_store_pb2.FeatureColumn,
    entity_count: int,
    broken: Callable[[str], UnavailableError],
) -> tuple[Sequence[Any], Sequence[int], Sequence[int]]:
    """``column``'s values, statuses and ages, checked to hold one entry per entity."""
    array = _VALUE_ARRAYS.get(column.type)
    if array is None:
        raise broken(f"feature {column.name!r} of unknown type {column.type}")
    values, statuses, ages = getattr(column, array), column.status, column.age_ms
    if not len(values) == len(statuses) == len(ages) == entity_count:
        raise broken(
            f"feature {column.name!r} with {len(statuses)} statuses, {len(ages)} ages "
            f"and {len(values)} values for {entity_count} entities"
        )
    return values, statuses, ages


def _row_of_one(
    response: feature_store_pb2.GetOnlineFeaturesResponse,
    broken: Callable[[str], UnavailableError],
) -> dict[str, OnlineValue]:
    """:func:`rows_of` for a response of one entity."""
    row: dict[str, OnlineValue] = {}
    present = common_pb2.FEATURE_STATUS_PRESENT
    new = tuple.__new__
    for column in response.features:
        values, statuses, ages = _arrays(column, 1, broken)
        status = statuses[0]
        if status == present:
            value = None if column.nulls else values[0]
            row[column.name] = new(OnlineValue, (value, "PRESENT", ages[0]))
        else:
            row[column.name] = new(OnlineValue, (None, _STATUS.get(status, "MISSING"), ages[0]))
    return row


class GrpcFeatureSource(FeatureSource):
    """``FeatureStore`` over a channel the caller owns (one persistent channel per process).

    With ``stream`` (the default) every read is one message each way on one
    long-lived ``StreamOnlineFeatures`` stream (see :class:`_ReadStream`); a
    store that turns the stream down is read with ``GetOnlineFeatures`` calls,
    as every read is without ``stream``.

    Concurrent reads coalesce (:class:`~driftline.serving.feature_coalescer.ReadCoalescer`,
    ``max_in_flight`` and ``max_coalesced``). The read's trace context travels with it
    (in the message on the stream, in the call metadata of a call), so the feature
    store's span joins the prediction's trace.
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
        # What the store refuses is about the read serving made for a model: an unknown
        # feature set is NOT_FOUND; a bad read is the model's spec asking for something
        # the feature set lacks, a deployment mismatch rather than the caller's fault.
        # Anything else is the store failing (UNAVAILABLE, retried).
        self._errors = RpcErrors(
            "feature store",
            target,
            refusals={
                grpc.StatusCode.NOT_FOUND: NotFoundError,
                grpc.StatusCode.INVALID_ARGUMENT: FailedPreconditionError,
            },
        )
        self._use_stream = stream
        self._stream: _ReadStream | None = None
        self._types: dict[str, dict[str, FeatureDatatype]] = {}
        self._reads = ReadCoalescer(
            self._call, target, max_in_flight=max_in_flight, max_coalesced=max_coalesced
        )

    async def online(
        self,
        featureset: str,
        entity_ids: Sequence[str],
        feature_names: Sequence[str],
        timeout_s: float,
    ) -> list[dict[str, OnlineValue]]:
        return await self._reads.read(featureset, entity_ids, feature_names, timeout_s)

    async def _call(
        self,
        featureset: str,
        entity_ids: Sequence[str],
        feature_names: Sequence[str],
        timeout_s: float,
        metadata: TraceContext,
    ) -> list[dict[str, OnlineValue]]:
        """One read of the store (the coalescer's ``Read``): on the stream, else a call."""
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
                raise self._errors.of_rpc(exc, timeout_s=timeout_s) from exc
            if refused is not None and self._use_stream:  # said once
                log.warning(
                    "feature store at %s turned the read stream down (%s) but answers "
                    "GetOnlineFeatures calls: reading with calls until serving restarts",
                    self._target,
                    refused,
                )
                self._use_stream = False
        return rows_of(response, len(entity_ids), self._target)

    async def _stream_read(
        self,
        request: feature_store_pb2.GetOnlineFeaturesRequest,
        timeout_s: float,
        metadata: TraceContext,
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
            raise self._errors.of_status(exc.code, exc.details, timeout_s=timeout_s) from None
        except _ReadTimedOut:
            # As a call's deadline would have ended it.
            raise self._errors.of_status(
                grpc.StatusCode.DEADLINE_EXCEEDED, None, timeout_s=timeout_s
            ) from None
        if result.code:
            code = STATUS_BY_NUMBER.get(result.code, grpc.StatusCode.UNKNOWN)
            raise self._errors.of_status(code, result.message, timeout_s=timeout_s)
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
            raise self._errors.of_rpc(exc, timeout_s=5.0) from exc
        for fs in response.featuresets:
            self._types[fs.name] = {f.name: _DATATYPES.get(f.type, "FP64") for f in fs.features}
        return self._types.get(featureset, {})


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
        self._writer.add_done_callback(mark_retrieved)
        self._reader.add_done_callback(mark_retrieved)

    async def read(
        self,
        request: feature_store_pb2.GetOnlineFeaturesRequest,
        timeout_s: float,
        metadata: TraceContext,
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
