"""The online-store conformance suite on the harness's real redis-server.

The store is built the way the features service builds it, from
``features.online_store`` (the default ``redis`` type reading the ``redis``
section), and a store that cannot be reached is answered ``UNAVAILABLE`` over gRPC.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from driftline.devtools.infra import free_port
from driftline.features.grpc_server import start_grpc_server
from driftline.features.lookup import OnlineFeatureLookup
from driftline.features.metrics import FeaturesMetrics
from driftline.online_store import (
    EntityWrite,
    OnlineStore,
    StoreUnavailable,
    create_online_store,
)
from driftline.online_store.checks import ALL_CHECKS, GENERATION_MARKER_CHECKS, SPEC
from driftline.online_store.redis_store import RedisOnlineStore
from driftline.settings import PlatformSettings
from driftline.specs import FeatureSetCatalog
from driftline.v1 import feature_store_pb2, feature_store_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "check", [*ALL_CHECKS, *GENERATION_MARKER_CHECKS], ids=lambda c: c.__name__
)
async def test_redis_store(
    check: Callable[[OnlineStore], Awaitable[None]], redis_server: Any
) -> None:
    admin = Redis.from_url(redis_server.url)
    await admin.flushdb()
    await admin.aclose()
    settings = PlatformSettings(redis={"host": redis_server.host, "port": redis_server.port})
    store = create_online_store(settings)
    assert isinstance(store, RedisOnlineStore)
    try:
        await check(store)
    finally:
        await store.close()


async def test_a_flushall_removes_the_generation_marker(redis_server: Any) -> None:
    admin = Redis.from_url(redis_server.url)
    store = RedisOnlineStore(redis_server.url, key_ttl_s=60)
    try:
        await admin.flushdb()
        assert store.generation_marker is not None
        await store.generation_marker.claim("before")
        await admin.flushall()
        assert await store.generation_marker.read() is None
    finally:
        await store.close()
        await admin.aclose()


async def test_an_unreachable_store_is_store_unavailable_and_grpc_unavailable() -> None:
    store = RedisOnlineStore(f"redis://127.0.0.1:{free_port()}/0")
    lookup = OnlineFeatureLookup(FeatureSetCatalog([SPEC]), store)
    server, port = await start_grpc_server(lookup, FeaturesMetrics(), "127.0.0.1", 0)
    try:
        # Every call of the contract raises the one error type, whatever Redis said.
        with pytest.raises(StoreUnavailable, match="the online store is unavailable"):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.write(SPEC.name, [EntityWrite("e1", {"x": (1.0, 1)})])
        with pytest.raises(StoreUnavailable):
            await store.read(SPEC, ["e1"], ["x"], 1.0)
        assert store.generation_marker is not None
        with pytest.raises(StoreUnavailable):
            await store.generation_marker.read()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = feature_store_pb2_grpc.FeatureStoreStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetOnlineFeatures(
                    feature_store_pb2.GetOnlineFeaturesRequest(
                        featureset=SPEC.name, entity_ids=["e1"]
                    ),
                    timeout=10,
                )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "the online store is unavailable" in (err.value.details() or "")
    finally:
        await server.stop(None)
        await store.close()
