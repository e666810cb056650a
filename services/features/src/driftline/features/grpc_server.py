"""gRPC ``driftline.v1.FeatureStore``: a thin edge over :class:`OnlineFeatureLookup`.

Reads come as ``GetOnlineFeatures`` calls or as messages on a
``StreamOnlineFeatures`` stream (:func:`answer_read_stream`); both go through
the same lookup and the shared gRPC edge (:mod:`driftline.edge.server`): a
server span continuing the caller's trace, the status of a
:class:`DriftlineError`, the latency histogram (labelled by method). A call
whose deadline has passed when it arrives is refused, as is a read on the
stream whose ``timeout_ms`` runs out.

Also serves ``grpc.health.v1`` (``SERVING`` once started) and server reflection.
Errors map through the platform error table: unknown feature set → NOT_FOUND,
bad request → INVALID_ARGUMENT, the online store's ``StoreUnavailable`` → UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import grpc
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from driftline.edge.errors import STATUS_NUMBER
from driftline.edge.server import RpcFailed, ServerEdge
from driftline.features.columns import declared_types, online_features_response
from driftline.features.lookup import OnlineFeatureLookup
from driftline.security import grpc_tls
from driftline.settings import SecuritySettings
from driftline.telemetry import Children, ServiceMetrics, context_from_metadata
from driftline.v1 import feature_store_pb2, feature_store_pb2_grpc

__all__ = [
    "FeatureStoreServicer",
    "ReadFailed",
    "answer_read_stream",
    "start_grpc_server",
]

log = logging.getLogger(__name__)
tracer = trace.get_tracer("driftline.features")

SERVICE_NAME = feature_store_pb2.DESCRIPTOR.services_by_name["FeatureStore"].full_name

_EDGE = ServerEdge(SERVICE_NAME, tracer, component="the feature store")
_STREAM_READS = _EDGE.messages("StreamOnlineFeatures")


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


MAX_READS_IN_FLIGHT = 1024
"""Most reads of one StreamOnlineFeatures stream being answered at once."""


ReadFailed = RpcFailed
"""A read that is answered with a gRPC status (a name) and message instead of features."""


async def answer_read_stream(
    request_iterator: AsyncIterator[feature_store_pb2.OnlineFeaturesRead],
    context: grpc.aio.ServicerContext[
        feature_store_pb2.OnlineFeaturesRead, feature_store_pb2.OnlineFeaturesResult
    ],
    read: Callable[
        [feature_store_pb2.OnlineFeaturesRead, feature_store_pb2.GetOnlineFeaturesResponse],
        Awaitable[None],
    ],
    *,
    max_in_flight: int = MAX_READS_IN_FLIGHT,
) -> None:
    """Serve one ``StreamOnlineFeatures`` stream with ``read(one, into)``, which answers
    the read ``one`` by filling ``into``: the response inside the result written back
    (filled in place, not copied in: a copy of a read of 100 entities costs ~80 µs).

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
            out = feature_store_pb2.OnlineFeaturesResult(id=one.id)
            try:
                async with asyncio.timeout_at(deadline):
                    await read(one, out.response)
            except TimeoutError:
                raise ReadFailed(
                    "DEADLINE_EXCEEDED", f"the read took longer than its {one.timeout_ms} ms"
                ) from None
        except ReadFailed as exc:
            out = _failure(one.id, exc.code, exc.message)
        except Exception as exc:  # never end the stream over one read
            log.exception("stream read %d failed", one.id)
            out = _failure(one.id, "INTERNAL", f"the read failed ({type(exc).__name__}: {exc})")
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


def _failure(read_id: int, code: str, message: str) -> feature_store_pb2.OnlineFeaturesResult:
    """The answer to a read that failed with gRPC status ``code`` (its name)."""
    return feature_store_pb2.OnlineFeaturesResult(
        id=read_id, code=STATUS_NUMBER[code], message=message
    )


class FeatureStoreServicer(feature_store_pb2_grpc.FeatureStoreServicer):
    """Parses requests, calls the lookup, formats responses."""

    def __init__(self, lookup: OnlineFeatureLookup, metrics: ServiceMetrics) -> None:
        self.lookup = lookup
        self.metrics = metrics
        self._latency = Children(metrics.request_latency)

    def record_rpc(self, method: str, code: str, seconds: float) -> None:
        """Time one call (or one read of a stream) into the request latency histogram."""
        self._latency(method, code).observe(seconds)

    async def _read(
        self,
        request: feature_store_pb2.GetOnlineFeaturesRequest,
        into: feature_store_pb2.GetOnlineFeaturesResponse | None = None,
    ) -> feature_store_pb2.GetOnlineFeaturesResponse:
        """The response to one read, one column per feature (built in ``into`` if given)."""
        result = await self.lookup.get(
            request.featureset, list(request.entity_ids), list(request.feature_names)
        )
        return online_features_response(result, into)

    @_EDGE.unary("GetOnlineFeatures")
    async def GetOnlineFeatures(
        self,
        request: feature_store_pb2.GetOnlineFeaturesRequest,
        context: grpc.aio.ServicerContext[
            feature_store_pb2.GetOnlineFeaturesRequest,
            feature_store_pb2.GetOnlineFeaturesResponse,
        ],
    ) -> feature_store_pb2.GetOnlineFeaturesResponse:
        return await self._read(request)

    async def StreamOnlineFeatures(  # type: ignore[override]  # answers by context.write
        self,
        request_iterator: AsyncIterator[feature_store_pb2.OnlineFeaturesRead],
        context: grpc.aio.ServicerContext[
            feature_store_pb2.OnlineFeaturesRead, feature_store_pb2.OnlineFeaturesResult
        ],
    ) -> None:
        async def read(
            one: feature_store_pb2.OnlineFeaturesRead,
            into: feature_store_pb2.GetOnlineFeaturesResponse,
        ) -> None:
            # Each read continues its own caller's trace (serving sends its traceparent).
            parent = context_from_metadata(one.trace_context.items())
            await _STREAM_READS.answer(self, parent, partial(self._read, into=into), one.request)

        await answer_read_stream(request_iterator, context, read)

    @_EDGE.unary("ListFeatureSets")
    async def ListFeatureSets(
        self,
        request: feature_store_pb2.ListFeatureSetsRequest,
        context: grpc.aio.ServicerContext[
            feature_store_pb2.ListFeatureSetsRequest, feature_store_pb2.ListFeatureSetsResponse
        ],
    ) -> feature_store_pb2.ListFeatureSetsResponse:
        infos = []
        for spec in self.lookup.catalog:
            types = declared_types(spec)
            features = [
                feature_store_pb2.FeatureInfo(
                    name=name, type=types[name], kind="raw", description=f.description
                )
                for name, f in spec.fields.items()
            ]
            for agg in spec.aggregations:
                features.append(
                    feature_store_pb2.FeatureInfo(
                        name=agg.name,
                        type=types[agg.name],
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
    lookup: OnlineFeatureLookup,
    metrics: ServiceMetrics,
    host: str,
    port: int,
    security: SecuritySettings | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start the FeatureStore, health and reflection services; returns the server and port.

    In secure mode (``security``) the port is mutual TLS: only a client with a
    certificate of the platform's CA is served. Raises :class:`RuntimeError` when the
    address cannot be bound.
    """
    server = grpc.aio.server()
    feature_store_pb2_grpc.add_FeatureStoreServicer_to_server(
        FeatureStoreServicer(lookup, metrics), server
    )
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
    bound = grpc_tls.add_port(server, f"{host}:{port}", security, "features")
    if bound == 0:
        raise RuntimeError(f"cannot bind the FeatureStore gRPC server to {host}:{port}")
    await server.start()
    for name in (SERVICE_NAME, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound
