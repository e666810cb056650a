"""The read path on the harness's redis-server: the pipelined connection and the gRPC servicer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from driftline.features.columns import column_values
from driftline.features.grpc_server import start_grpc_server
from driftline.features.lookup import OnlineFeatureLookup
from driftline.features.metrics import FeaturesMetrics
from driftline.online_store import EntityWrite
from driftline.online_store.redis_store import RedisOnlineStore
from driftline.online_store.resp import PipelinedRedis
from driftline.specs import FeatureSetCatalog, FeatureSetSpec
from driftline.v1 import common_pb2, feature_store_pb2, feature_store_pb2_grpc

pytestmark = pytest.mark.integration


def _by_entity(response: Any) -> list[dict[str, tuple[Any, int, int, int]]]:
    """Per entity of a response, in order: name -> (value, status, event_time_us, age_ms)."""
    rows: list[dict[str, tuple[Any, int, int, int]]] = [{} for _ in response.entity_ids]
    for column in response.features:
        cells = zip(
            column_values(column), column.status, column.event_time_us, column.age_ms, strict=True
        )
        for row, cell in zip(rows, cells, strict=True):
            row[column.name] = cell
    return rows


async def test_concurrent_commands_get_their_own_replies(redis_server: Any) -> None:
    admin = Redis.from_url(redis_server.url)
    await admin.mset({f"pipe:{i}": f"value-{i}" for i in range(200)})
    pipe = PipelinedRedis(redis_server.url)
    try:
        # 200 commands in flight on one connection at once: each caller must get
        # the reply to its own command, in spite of sharing the socket.
        replies = await asyncio.gather(*(pipe.execute("GET", f"pipe:{i}") for i in range(200)))
        assert replies == [f"value-{i}".encode() for i in range(200)]
        with pytest.raises(ResponseError, match=r"wrong number of arguments|unknown command"):
            await pipe.execute("GET")
        # An error reply fails only its own command: the connection still answers.
        assert await pipe.execute("GET", "pipe:7") == b"value-7"
        with pytest.raises(NoScriptError):
            await pipe.execute("EVALSHA", "0" * 40, 0)
    finally:
        await pipe.close()
        await admin.aclose()


async def test_a_dropped_connection_fails_its_commands_then_reconnects(redis_server: Any) -> None:
    admin = Redis.from_url(redis_server.url)
    pipe = PipelinedRedis(redis_server.url)
    try:
        await pipe.execute("CLIENT", "SETNAME", "pipelined-test")
        # A blocking command keeps a reply outstanding while the server drops us.
        waiting = asyncio.ensure_future(pipe.execute("BLPOP", "pipe:never", 5))
        await asyncio.sleep(0.2)
        killed = await admin.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        assert killed >= 1
        with pytest.raises(ConnectionError, match="lost the connection"):
            await waiting
        # The next command reconnects by itself.
        assert await pipe.execute("PING") in (b"PONG", "PONG", True)
    finally:
        await pipe.close()
        await admin.aclose()


async def test_unreachable_redis_is_a_connection_error() -> None:
    from driftline.devtools.infra import free_port

    pipe = PipelinedRedis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=2)
    with pytest.raises(ConnectionError, match="cannot connect to Redis"):
        await pipe.execute("PING")


SPEC = FeatureSetSpec(
    name="reads",
    version=3,
    entity="user",
    ttl=3600,
    fields={
        "f": {"type": "float"},
        "i": {"type": "int"},
        "s": {"type": "string"},
        "b": {"type": "bool"},
        "old": {"type": "float"},
        "none": {"type": "float"},
    },
)


async def test_get_online_features_over_grpc_types_ages_and_statuses(redis_server: Any) -> None:
    admin = Redis.from_url(redis_server.url)
    await admin.flushdb()
    store = RedisOnlineStore(redis_server.url)
    now_us = int(time.time() * 1e6)
    recent, stale = now_us - 2_500_000, now_us - 7200 * 1_000_000
    await store.write(
        "reads",
        [
            EntityWrite(
                "u1",
                {
                    "f": (-1.25e-7, recent),
                    "i": (-42, recent),
                    "s": ("héllo | world", recent),
                    "b": (True, recent),
                    "old": (3.5, stale),
                    # "none" is never written: MISSING
                },
            ),
            EntityWrite("u2", {"f": (float("inf"), recent), "i": (2**62, now_us - 1000)}),
        ],
    )
    lookup = OnlineFeatureLookup(FeatureSetCatalog([SPEC]), store)
    server, port = await start_grpc_server(lookup, FeaturesMetrics(), "127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = feature_store_pb2_grpc.FeatureStoreStub(channel)
            response = await stub.GetOnlineFeatures(
                feature_store_pb2.GetOnlineFeaturesRequest(
                    featureset="reads", entity_ids=["u1", "u2", "u1", "nobody"]
                ),
                timeout=5,
            )
            # A second read of some features, in another order.
            again = await stub.GetOnlineFeatures(
                feature_store_pb2.GetOnlineFeaturesRequest(
                    featureset="reads", entity_ids=["nobody", "u1"], feature_names=["s", "f"]
                ),
                timeout=5,
            )
    finally:
        await server.stop(None)
        await store.close()
        await admin.aclose()

    assert response.featureset_version == 3
    assert [c.name for c in response.features] == ["f", "i", "s", "b", "old", "none"]
    assert list(response.entity_ids) == ["u1", "u2", "u1", "nobody"]
    # Each feature's values in the array of its declared type, names once.
    types = [
        (c.type, len(c.fp64), len(c.int64), len(c.bytes), len(c.bool)) for c in response.features
    ]
    double, int64 = feature_store_pb2.FEATURE_TYPE_DOUBLE, feature_store_pb2.FEATURE_TYPE_INT64
    string, boolean = feature_store_pb2.FEATURE_TYPE_STRING, feature_store_pb2.FEATURE_TYPE_BOOL
    assert types == [
        (double, 4, 0, 0, 0),
        (int64, 0, 4, 0, 0),
        (string, 0, 0, 4, 0),
        (boolean, 0, 0, 0, 4),
        (double, 4, 0, 0, 0),
        (double, 4, 0, 0, 0),
    ]
    rows = _by_entity(response)
    u1 = rows[0]
    present = common_pb2.FEATURE_STATUS_PRESENT
    assert u1["f"][:2] == (-1.25e-7, present)
    assert u1["i"][0] == -42 and type(u1["i"][0]) is int
    assert u1["s"][0] == "héllo | world"
    assert u1["b"][0] is True
    for name in ("f", "i", "s", "b"):
        assert u1[name][2] == recent
        assert 2400 <= u1[name][3] <= 2500 + 60_000
    value, status, event_time_us, age_ms = u1["old"]
    assert (value, status, event_time_us) == (None, common_pb2.FEATURE_STATUS_STALE, stale)
    assert age_ms >= 7200 * 1000
    assert u1["none"] == (None, common_pb2.FEATURE_STATUS_MISSING, 0, 0)
    u2 = rows[1]
    assert u2["f"][0] == float("inf")
    assert u2["i"][0] == 2**62
    assert u2["i"][2] == now_us - 1000
    assert u2["s"][1] == common_pb2.FEATURE_STATUS_MISSING
    assert rows[2] == rows[0]
    assert all(cell == (None, common_pb2.FEATURE_STATUS_MISSING, 0, 0) for cell in rows[3].values())
    assert list(again.entity_ids) == ["nobody", "u1"]
    assert [c.name for c in again.features] == ["s", "f"]
    again_rows = _by_entity(again)
    assert again_rows[1]["s"][0] == "héllo | world"
    assert again_rows[1]["f"][0] == -1.25e-7
    assert again_rows[0]["s"][1] == common_pb2.FEATURE_STATUS_MISSING


async def test_reads_survive_a_flushed_script_cache(redis_server: Any) -> None:
    admin = Redis.from_url(redis_server.url)
    store = RedisOnlineStore(redis_server.url)
    now_us = int(time.time() * 1e6)
    try:
        await store.write("reads", [EntityWrite(e, {"f": (1.5, now_us)}) for e in ("a", "b")])
        first = await store.read(SPEC, ["a", "b"], ["f"], time.time())
        await admin.script_flush()  # what a Redis restart does to the script cache
        second = await store.read(SPEC, ["a", "b"], ["f"], time.time())
        assert [r[0].value for r in first] == [r[0].value for r in second] == [1.5, 1.5]
    finally:
        await store.close()
        await admin.aclose()


async def test_stream_reads_answer_as_calls_do_and_a_failed_read_fails_alone(
    redis_server: Any,
) -> None:
    store = RedisOnlineStore(redis_server.url)
    now_us = int(time.time() * 1e6)
    await store.write(
        "reads",
        [EntityWrite("s1", {"f": (2.5, now_us - 1000), "s": ("x", now_us)})],
    )
    lookup = OnlineFeatureLookup(FeatureSetCatalog([SPEC]), store)
    server, port = await start_grpc_server(lookup, FeaturesMetrics(), "127.0.0.1", 0)
    good = feature_store_pb2.GetOnlineFeaturesRequest(
        featureset="reads", entity_ids=["s1", "nobody"], feature_names=["f", "s", "i"]
    )
    reads = {
        7: good,
        8: feature_store_pb2.GetOnlineFeaturesRequest(featureset="other", entity_ids=["s1"]),
        9: feature_store_pb2.GetOnlineFeaturesRequest(
            featureset="reads", entity_ids=["s1"], feature_names=["f", "bogus"]
        ),
        2**40: good,
    }
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = feature_store_pb2_grpc.FeatureStoreStub(channel)
            unary = await stub.GetOnlineFeatures(good, timeout=5)
            call = stub.StreamOnlineFeatures()
            for read_id, request in reads.items():
                await call.write(
                    feature_store_pb2.OnlineFeaturesRead(
                        id=read_id, request=request, timeout_ms=5000
                    )
                )
            await call.done_writing()
            # Half-closed: every read sent is answered, then the stream ends OK.
            results = {}
            async for result in call:
                results[result.id] = result
            assert await call.code() == grpc.StatusCode.OK
    finally:
        await server.stop(None)
        await store.close()

    assert set(results) == set(reads)
    for read_id in (7, 2**40):
        assert results[read_id].code == 0
        answer = results[read_id].response
        # The same answer as the call, but for the read time the ages are counted from.
        assert answer.read_at.ToNanoseconds() >= unary.read_at.ToNanoseconds()
        answer.ClearField("read_at")
        unary.ClearField("read_at")
        for column in (*answer.features, *unary.features):
            column.ClearField("age_ms")
        assert answer == unary
        assert list(answer.features[0].fp64) == [2.5, 0.0]
    assert results[8].code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "feature set 'other' is not served" in results[8].message
    assert not results[8].HasField("response")
    assert results[9].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "'bogus'" in results[9].message
