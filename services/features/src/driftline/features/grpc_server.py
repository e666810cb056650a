"""gRPC ``driftline.v1.FeatureStore``: a thin edge over :class:`OnlineFeatureLookup`.

Reads come as ``GetOnlineFeatures`` calls or as messages on a
``StreamOnlineFeatures`` stream (:func:`answer_read_stream`); both go through
the same lookup, span and latency histogram (labelled by method).

Also serves ``grpc.health.v1`` (``SERVING`` once started) and server reflection.
Errors map through the platform error table: unknown feature set → NOT_FOUND,
bad request → INVALID_ARGUMENT, Redis unreachable → UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import context as otel_context
from opentelemetry import trace
from redis.exceptions import RedisError

from driftline.contracts.errors import DriftlineError
from driftline.features.lookup import OnlineFeatureLookup
from driftline.features.wire import encode_failure, encode_response, encode_result
from driftline.telemetry import (
    Children,
    RpcServerSpans,
    ServiceMetrics,
    context_from_metadata,
)
from driftline.v1 import feature_store_pb2, feature_store_pb2_grpc

__all__ = [
    "FeatureStoreServicer",
    "ReadFailed",
    "add_servicer",
    "answer_read_stream",
    "start_grpc_server",
]

log = logging.getLogger(__name__)
tracer = trace.get_tracer("driftline.features")

SERVICE_NAME = feature_store_pb2.DESCRIPTOR.services_by_name["FeatureStore"].full_name

_SPANS = {
    method: RpcServerSpans(tracer, SERVICE_NAME, method)
    for method in ("GetOnlineFeatures", "StreamOnlineFeatures")
}
_TYPES = {
    "float": feature_store_pb2.FEATURE_TYPE_DOUBLE,
    "int": feature_store_pb2.FEATURE_TYPE_INT64,
    "string": feature_store_pb2.FEATURE_TYPE_STRING,
    "bool": feature_store_pb2.FEATURE_TYPE_BOOL,
}


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def _serialize_response(response: bytes | feature_store_pb2.GetOnlineFeaturesResponse) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def add_servicer(
    servicer: feature_store_pb2_grpc.FeatureStoreServicer, server: grpc.aio.Server
) -> None:
    """``add_FeatureStoreServicer_to_server``, except that the reads may answer bytes."""
    handlers = {
        "GetOnlineFeatures": grpc.unary_unary_rpc_method_handler(
            servicer.GetOnlineFeatures,
            request_deserializer=feature_store_pb2.GetOnlineFeaturesRequest.FromString,
            response_serializer=_serialize_response,
        ),
        "StreamOnlineFeatures": grpc.stream_stream_rpc_method_handler(
            servicer.StreamOnlineFeatures,
            request_deserializer=feature_store_pb2.OnlineFeaturesRead.FromString,
            response_serializer=_serialize_response,
        ),
        "ListFeatureSets": grpc.unary_unary_rpc_method_handler(
            servicer.ListFeatureSets,
            request_deserializer=feature_store_pb2.ListFeatureSetsRequest.FromString,
            response_serializer=feature_store_pb2.ListFeatureSetsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    # As the generated code does (registered methods skip a lookup per call);
    # grpc-stubs predates the method.
    server.add_registered_method_handlers(SERVICE_NAME, handlers)  # type: ignore[attr-defined]


MAX_READS_IN_FLIGHT = 1024
"""Most reads of one StreamOnlineFeatures stream being answered at once."""


class ReadFailed(Exception):
    """A read that is answered with a gRPC status instead of features."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def answer_read_stream(
    request_iterator: AsyncIterator[feature_store_pb2.OnlineFeaturesRead],
    context: grpc.aio.ServicerContext[feature_store_pb2.OnlineFeaturesRead, bytes],
    read: Callable[[feature_store_pb2.OnlineFeaturesRead], Awaitable[bytes]],
    *,
    max_in_flight: int = MAX_READS_IN_FLIGHT,
) -> None:
    """Serve one ``StreamOnlineFeatures`` stream with ``read`` (one read -> response bytes).

    Each read runs in its own task, so a slow one holds up no other, and is
    answered as it completes; a read that fails (:class:`ReadFailed`, or any
    error) answers its own status and the stream goes on. A read still running
    when its ``timeout_ms`` (counted from when it was taken off the stream) is
    up is given up and answers DEADLINE_EXCEEDED. The answers are
    written one at a time (a stream takes one write at once). At most
    ``max_in_flight`` reads of the stream run at once: beyond that the stream
    is not read until one finishes, so a client sending faster than the store
    answers is held back by the stream's flow control rather than piling up
    reads here. When the client half-closes, the reads it sent are answered
    before the stream ends.
    """
    loop = asyncio.get_running_loop()
    writing = asyncio.Lock()
    answering: set[asyncio.Task[None]] = set()

    async def answer(one: feature_store_pb2.OnlineFeaturesRead, received: float) -> None:
        try:
            # Like a call's deadline: the store stops working on a read its client
            # no longer waits for.
            deadline = received + one.timeout_ms / 1000 if one.timeout_ms else None
            try:
                async with asyncio.timeout_at(deadline):
                    body = await read(one)
            except TimeoutError:
                raise ReadFailed(
                    "DEADLINE_EXCEEDED", f"the read took longer than its {one.timeout_ms} ms"
                ) from None
            out = encode_result(one.id, body)
        except ReadFailed as exc:
            out = encode_failure(one.id, exc.code, exc.message)
        except Exception as exc:  # never end the stream over one read
            log.exception("stream read %d failed", one.id)
            out = encode_failure(
                one.id, "INTERNAL", f"the read failed ({type(exc).__name__}: {exc})"
            )
        async with writing:
            await context.write(out)

    try:
        async for one in request_iterator:
            if len(answering) >= max_in_flight:
                await asyncio.wait(answering, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.ensure_future(answer(one, loop.time()))
            answering.add(task)
            task.add_done_callback(answering.discard)
        if answering:
            await asyncio.gather(*answering)
    finally:
        for task in answering:
            task.cancel()


class FeatureStoreServicer(feature_store_pb2_grpc.FeatureStoreServicer):
    """Parses requests, calls the lookup, formats responses."""

    def __init__(self, lookup: OnlineFeatureLookup, metrics: ServiceMetrics) -> None:
        self.lookup = lookup
        self.metrics = metrics
        self._latency = Children(metrics.request_latency)

    async def _read(
        self,
        request: feature_store_pb2.GetOnlineFeaturesRequest,
        parent: otel_context.Context | None,
        method: str,
    ) -> bytes:
        """One lookup in its own server span: the encoded response, or :class:`ReadFailed`."""
        started = time.perf_counter()
        code = "OK"
        failure: BaseException | None = None
        # Continues the caller's trace (serving sends its traceparent).
        span, token = _SPANS[method].start(parent)
        try:
            result = await self.lookup.get(
                request.featureset, list(request.entity_ids), list(request.feature_names)
            )
        except DriftlineError as exc:
            code = exc.grpc_code
            raise ReadFailed(code, exc.message) from None
        except RedisError as exc:
            code = "UNAVAILABLE"
            log.warning("online store read failed: %s", exc)
            raise ReadFailed(code, f"the online store is unreachable: {exc}") from None
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            code, failure = "INTERNAL", exc
            raise
        finally:
            RpcServerSpans.end(span, token, code, grpc.StatusCode[code].value[0], failure)
            self._latency(method, code).observe(time.perf_counter() - started)
        return encode_response(result)

    async def GetOnlineFeatures(  # type: ignore[override]  # bytes: see _serialize_response
        self,
        request: feature_store_pb2.GetOnlineFeaturesRequest,
        context: grpc.aio.ServicerContext[
            feature_store_pb2.GetOnlineFeaturesRequest,
            feature_store_pb2.GetOnlineFeaturesResponse,
        ],
    ) -> bytes:
        parent = context_from_metadata(context.invocation_metadata())
        try:
            return await self._read(request, parent, "GetOnlineFeatures")
        except ReadFailed as exc:
            await context.abort(grpc.StatusCode[exc.code], exc.message)
            raise  # abort raises; this line only satisfies the type checker

    async def StreamOnlineFeatures(  # type: ignore[override]  # bytes: see add_servicer
        self,
        request_iterator: AsyncIterator[feature_store_pb2.OnlineFeaturesRead],
        context: grpc.aio.ServicerContext[feature_store_pb2.OnlineFeaturesRead, bytes],
    ) -> None:
        async def read(one: feature_store_pb2.OnlineFeaturesRead) -> bytes:
            parent = context_from_metadata(one.trace_context.items())
            return await self._read(one.request, parent, "StreamOnlineFeatures")

        await answer_read_stream(request_iterator, context, read)

    async def ListFeatureSets(
        self,
        request: feature_store_pb2.ListFeatureSetsRequest,
        context: grpc.aio.ServicerContext[
            feature_store_pb2.ListFeatureSetsRequest, feature_store_pb2.ListFeatureSetsResponse
        ],
    ) -> feature_store_pb2.ListFeatureSetsResponse:
        infos = []
        for spec in self.lookup.catalog:
            features = [
                feature_store_pb2.FeatureInfo(
                    name=name, type=_TYPES[f.type], kind="raw", description=f.description
                )
                for name, f in spec.fields.items()
            ]
            for agg in spec.aggregations:
                if agg.fn == "count":
                    ftype = feature_store_pb2.FEATURE_TYPE_INT64
                elif agg.fn == "last" and agg.field is not None:
                    ftype = _TYPES[spec.fields[agg.field].type]
                else:
                    ftype = feature_store_pb2.FEATURE_TYPE_DOUBLE
                features.append(
                    feature_store_pb2.FeatureInfo(
                        name=agg.name,
                        type=ftype,
                        kind=agg.fn,
                        source=agg.field or "",
                        window=_duration(agg.window),
                        hop=_duration(agg.hop_s),
                    )
                )
            infos.append(
                feature_store_pb2.FeatureSetInfo(
                    name=spec.name,
                    version=spec.version,
                    entity_key=spec.entity,
                    features=features,
                    ttl=_duration(spec.ttl),
                )
            )
        return feature_store_pb2.ListFeatureSetsResponse(featuresets=infos)


async def start_grpc_server(
    lookup: OnlineFeatureLookup, metrics: ServiceMetrics, host: str, port: int
) -> tuple[grpc.aio.Server, int]:
    """Start the FeatureStore, health and reflection services; returns the server and port.

    Raises :class:`RuntimeError` when the address cannot be bound.
    """
    server = grpc.aio.server()
    add_servicer(FeatureStoreServicer(lookup, metrics), server)
    # grpc-health's asyncio servicer lives in ``health.aio``, which its stubs omit.
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"cannot bind the FeatureStore gRPC server to {host}:{port}")
    await server.start()
    for name in (SERVICE_NAME, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound
