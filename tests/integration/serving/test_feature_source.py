"""The FeatureStore client over a real gRPC socket: reads on one stream, or calls; coalescing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from driftline.contracts.errors import DeadlineExceededError, NotFoundError, UnavailableError
from driftline.devtools.infra import free_port
from driftline.features.grpc_server import (
    MAX_READS_IN_FLIGHT,
    ReadFailed,
    answer_read_stream,
)
from driftline.serving.feature_transport import GrpcFeatureSource
from driftline.v1 import common_pb2, feature_store_pb2, feature_store_pb2_grpc

pytestmark = pytest.mark.integration

NAMES = ["salary", "age"]


class Store(feature_store_pb2_grpc.FeatureStoreServicer):
    """Answers every entity ``e-<i>`` with salary ``i * 10.0`` and age ``i``, slowly.

    An entity ``slow-<i>`` takes a second. Reads come as calls or on the stream.
    """

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.streams = 0
        self.mute_streams = 0
        """The first this many streams take reads and never answer (a stalled connection)."""
        self.stream_limit = MAX_READS_IN_FLIGHT
        self.running = 0
        self.most_running = 0
        self.trace_contexts: list[dict[str, str]] = []

    async def GetOnlineFeatures(self, request: Any, context: Any) -> Any:
        try:
            return await self._answer(request)
        except ReadFailed as exc:
            await context.abort(grpc.StatusCode[exc.code], exc.message)

    async def StreamOnlineFeatures(self, request_iterator: Any, context: Any) -> None:
        self.streams += 1
        if self.streams <= self.mute_streams:
            async for _ in request_iterator:
                pass
            return

        async def read(one: Any, into: Any) -> None:
            self.trace_contexts.append(dict(one.trace_context))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            try:
                into.CopyFrom(await self._answer(one.request))
            finally:
                self.running -= 1

        await answer_read_stream(request_iterator, context, read, max_in_flight=self.stream_limit)

    async def _answer(self, request: Any) -> Any:
        self.calls.append(list(request.entity_ids))
        if request.featureset != "loans":
            raise ReadFailed("NOT_FOUND", f"no feature set {request.featureset}")
        slow = any(e.startswith("slow-") for e in request.entity_ids)
        await asyncio.sleep(1.0 if slow else 0.05)  # a read in flight while others arrive
        response = feature_store_pb2.GetOnlineFeaturesResponse(
            featureset="loans", entity_ids=request.entity_ids
        )
        ids = [int(e.split("-")[1]) for e in request.entity_ids]
        for name in request.feature_names:
            column = response.features.add(
                name=name,
                status=[common_pb2.FEATURE_STATUS_PRESENT] * len(ids),
                event_time_us=[1_800_000_000_000_000 - i * 1000 for i in ids],
                age_ms=ids,
            )
            if name == "salary":
                column.type = feature_store_pb2.FEATURE_TYPE_DOUBLE
                column.fp64.extend(i * 10.0 for i in ids)
            else:
                column.type = feature_store_pb2.FEATURE_TYPE_INT64
                column.int64.extend(ids)
        return response


async def _serve(servicer: Store, port: int = 0, *, stream: bool = True) -> tuple[Any, int]:
    server = grpc.aio.server()
    if stream:
        feature_store_pb2_grpc.add_FeatureStoreServicer_to_server(servicer, server)
    else:  # a feature store from before StreamOnlineFeatures
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "driftline.v1.FeatureStore",
                    {
                        "GetOnlineFeatures": grpc.unary_unary_rpc_method_handler(
                            servicer.GetOnlineFeatures,
                            request_deserializer=feature_store_pb2.GetOnlineFeaturesRequest.FromString,
                            response_serializer=feature_store_pb2.GetOnlineFeaturesResponse.SerializeToString,
                        )
                    },
                ),
            )
        )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


@pytest.fixture(params=["stream", "unary"])
async def store(request: Any) -> AsyncIterator[tuple[Store, GrpcFeatureSource]]:
    servicer = Store()
    server, port = await _serve(servicer)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    source = GrpcFeatureSource(channel, f"127.0.0.1:{port}", stream=request.param == "stream")
    try:
        yield servicer, source
    finally:
        await source.close()
        await channel.close()
        await server.stop(0)
    assert servicer.streams == (1 if request.param == "stream" else 0)


async def test_concurrent_reads_coalesce_and_each_caller_gets_its_rows(
    store: tuple[Store, GrpcFeatureSource],
) -> None:
    servicer, source = store
    ids = [[f"e-{i}"] if i % 3 else [f"e-{i}", f"e-{i + 100}"] for i in range(30)]
    first = asyncio.create_task(source.online("loans", ids[0], NAMES, 5.0))
    await asyncio.sleep(0.02)  # the first read is in flight now
    rest = await asyncio.gather(*(source.online("loans", e, NAMES, 5.0) for e in ids[1:]))
    results = [await first, *rest]
    for asked, rows in zip(ids, results, strict=True):
        assert [(r["salary"].value, r["age"].value) for r in rows] == [
            (int(e.split("-")[1]) * 10.0, int(e.split("-")[1])) for e in asked
        ]
        assert all(r["age"].status == "PRESENT" for r in rows)
    # The first read went out alone and at once; those arriving while it was in
    # flight shared the next call.
    assert servicer.calls[0] == ids[0]
    assert len(servicer.calls) == 2
    assert sorted(e for call in servicer.calls for e in call) == sorted(e for a in ids for e in a)


async def test_a_failed_coalesced_read_fails_every_caller(
    store: tuple[Store, GrpcFeatureSource],
) -> None:
    _, source = store
    results = await asyncio.gather(
        *(source.online("nope", [f"e-{i}"], NAMES, 5.0) for i in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, NotFoundError) and "nope" in r.message for r in results)
    # The source is still usable afterwards (on the same stream: see the fixture).
    [row] = await source.online("loans", ["e-7"], NAMES, 5.0)
    assert row["salary"].value == 70.0


async def test_a_late_read_fails_alone_while_the_stream_answers_others(
    store: tuple[Store, GrpcFeatureSource],
) -> None:
    servicer, source = store
    slow = asyncio.ensure_future(source.online("loans", ["slow-1"], NAMES, 0.2))
    await asyncio.sleep(0.02)
    # Other feature names: not coalesced with the slow read, sent beside it, and
    # answered before it.
    [row] = await source.online("loans", ["e-3"], ["age"], 5.0)
    assert not slow.done()
    assert row["age"].value == 3
    with pytest.raises(DeadlineExceededError, match="did not answer within 200 ms"):
        await slow
    # The late answer arrives after its reader gave up; the stream goes on.
    await asyncio.sleep(1.0)
    [row] = await source.online("loans", ["e-4"], NAMES, 5.0)
    assert row["salary"].value == 40.0
    assert servicer.calls == [["slow-1"], ["e-3"], ["e-4"]]


async def test_a_read_on_the_stream_carries_its_trace_context() -> None:
    servicer = Store()
    server, port = await _serve(servicer)
    provider = TracerProvider()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            source = GrpcFeatureSource(channel, f"127.0.0.1:{port}")
            with provider.get_tracer("test").start_as_current_span("predict") as span:
                await source.online("loans", ["e-1"], NAMES, 5.0)
            await source.online("loans", ["e-2"], NAMES, 5.0)  # outside any trace
            await source.close()
    finally:
        await server.stop(0)
    ctx = span.get_span_context()
    assert servicer.trace_contexts[0]["traceparent"].startswith(
        f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-"
    )
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert servicer.trace_contexts[1] == {}


async def test_a_store_without_the_stream_is_read_with_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    servicer = Store()
    server, port = await _serve(servicer, stream=False)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            source = GrpcFeatureSource(channel, f"127.0.0.1:{port}")
            with caplog.at_level(logging.WARNING):
                # Two reads open on the stream when the store turns it down (other
                # feature names: not coalesced), then one more.
                first = await asyncio.gather(
                    source.online("loans", ["e-0"], NAMES, 5.0),
                    source.online("loans", ["e-1"], ["age"], 5.0),
                )
                rows = [*first, await source.online("loans", ["e-2"], NAMES, 5.0)]
    finally:
        await server.stop(0)
    assert [r[0]["age"].value for r in rows] == [0, 1, 2]
    assert sorted(servicer.calls) == [["e-0"], ["e-1"], ["e-2"]]
    assert servicer.streams == 0
    warned = [r.getMessage() for r in caplog.records if "read stream down" in r.getMessage()]
    assert len(warned) == 1 and "reading with calls until serving restarts" in warned[0]


async def test_the_stream_reopens_after_the_store_restarts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    port = free_port()
    first = Store()
    server, _ = await _serve(first, port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        source = GrpcFeatureSource(channel, f"127.0.0.1:{port}")
        try:
            [row] = await source.online("loans", ["e-1"], NAMES, 5.0)
            assert row["age"].value == 1
            await server.stop(0)
            with pytest.raises(UnavailableError, match=f"feature store at 127.0.0.1:{port}"):
                await source.online("loans", ["e-2"], NAMES, 5.0)
            second = Store()
            server, _ = await _serve(second, port)
            # The channel reconnects with backoff: reads fail UNAVAILABLE until it has.
            for _ in range(200):
                try:
                    [row] = await source.online("loans", ["e-3"], NAMES, 5.0)
                    break
                except UnavailableError:
                    await asyncio.sleep(0.05)
            assert row["age"].value == 3
            assert second.streams == 1 and second.calls == [["e-3"]]
            # Said once, for the stream that had worked; not for each attempt in the outage.
            said = [r.getMessage() for r in caplog.records if "read stream" in r.getMessage()]
            assert len(said) == 1
            assert said[0].startswith(f"feature read stream to 127.0.0.1:{port} ended after 1 ")
        finally:
            await source.close()
            await server.stop(0)


async def test_a_stream_that_answers_nothing_is_replaced() -> None:
    servicer = Store()
    servicer.mute_streams = 1
    server, port = await _serve(servicer)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            source = GrpcFeatureSource(channel, f"127.0.0.1:{port}")
            with pytest.raises(DeadlineExceededError, match="did not answer within 200 ms"):
                await source.online("loans", ["e-1"], NAMES, 0.2)
            # Nothing came back on that stream for the read's whole time: the next
            # read goes out on a new one, and is answered.
            [row] = await source.online("loans", ["e-2"], NAMES, 5.0)
            await source.close()
    finally:
        await server.stop(0)
    assert row["age"].value == 2
    assert servicer.streams == 2
    assert servicer.calls == [["e-2"]]


async def test_a_stream_runs_at_most_its_limit_of_reads_at_once() -> None:
    servicer = Store()
    servicer.stream_limit = 2
    server, port = await _serve(servicer)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = feature_store_pb2_grpc.FeatureStoreStub(channel).StreamOnlineFeatures()
            for i in range(6):
                read = feature_store_pb2.GetOnlineFeaturesRequest(
                    featureset="loans", entity_ids=[f"e-{i}"], feature_names=NAMES
                )
                await call.write(feature_store_pb2.OnlineFeaturesRead(id=i + 1, request=read))
            await call.done_writing()
            answered = {r.id: r for r in [r async for r in call]}
    finally:
        await server.stop(0)
    # Six reads sent at once, all answered, never more than two at a time.
    assert sorted(answered) == [1, 2, 3, 4, 5, 6]
    assert all(r.code == 0 for r in answered.values())
    assert list(answered[4].response.entity_ids) == ["e-3"]
    assert list(answered[4].response.features[1].int64) == [3]
    assert servicer.most_running == 2


async def test_the_store_gives_up_a_read_at_its_deadline() -> None:
    servicer = Store()
    server, port = await _serve(servicer)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = feature_store_pb2_grpc.FeatureStoreStub(channel).StreamOnlineFeatures()
            slow = feature_store_pb2.GetOnlineFeaturesRequest(
                featureset="loans", entity_ids=["slow-1"], feature_names=NAMES
            )
            await call.write(
                feature_store_pb2.OnlineFeaturesRead(id=1, request=slow, timeout_ms=200)
            )
            result = await call.read()
            # Answered at the deadline, not when the read would have finished, and
            # the read is no longer running.
            running = servicer.running
            await call.done_writing()
            assert await call.read() == grpc.aio.EOF
    finally:
        await server.stop(0)
    assert result.id == 1
    assert result.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert result.message == "the read took longer than its 200 ms"
    assert running == 0
