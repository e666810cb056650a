"""Online key expiry on the harness's real redis-server.

Set by ``features.online_key_ttl_s`` (as before store types existed) or by the
``redis`` store's own ``features.online_store.key_ttl_s``; both reach Redis.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from driftline.online_store import EntityWrite, FeatureStatus, OnlineStore, create_online_store
from driftline.online_store.redis_store import RedisOnlineStore, entity_key
from driftline.settings import PlatformSettings
from driftline.specs import FeatureSetSpec

pytestmark = pytest.mark.integration

SPEC = FeatureSetSpec(name="exp", version=1, entity="e", ttl=3600, fields={"x": {"type": "int"}})


def _now_us() -> int:
    return int(time.time() * 1e6)


def _store_with_a_2s_key_ttl(how: str, redis_server: Any) -> OnlineStore:
    if how == "constructor":
        return RedisOnlineStore(redis_server.url, key_ttl_s=2.0)
    if how == "features.online_key_ttl_s":
        return create_online_store(
            PlatformSettings(
                redis={"host": redis_server.host, "port": redis_server.port},
                features={"online_key_ttl_s": 2.0},
            )
        )
    params = {"type": "redis", "url": redis_server.url, "key_ttl_s": 2.0}
    return create_online_store(PlatformSettings(features={"online_store": params}))


@pytest.mark.parametrize(
    "how", ["constructor", "features.online_key_ttl_s", "features.online_store.key_ttl_s"]
)
async def test_keys_expire_after_the_last_write_and_every_write_renews_them(
    redis_server: Any, how: str
) -> None:
    admin = Redis.from_url(redis_server.url)
    store = _store_with_a_2s_key_ttl(how, redis_server)
    try:
        await admin.flushdb()
        await store.write("exp", [EntityWrite("a", {"x": (1, _now_us())})])
        first = await admin.pttl(entity_key("exp", "a"))
        assert 0 < first <= 2000
        await asyncio.sleep(1.0)
        # An older event changes no value, but the entity is still sending: renewed.
        await store.write("exp", [EntityWrite("a", {"x": (0, 1)})])
        # Without the renewal about 1,000 ms would be left.
        assert await admin.pttl(entity_key("exp", "a")) > 1500
        [[read]] = await store.read(SPEC, ["a"], ["x"], time.time())
        assert (read.value, read.status) == (1, FeatureStatus.PRESENT)
        await asyncio.sleep(2.5)
        assert not await admin.exists(entity_key("exp", "a"))
        [[gone]] = await store.read(SPEC, ["a"], ["x"], time.time())
        assert gone.status == FeatureStatus.MISSING
    finally:
        await store.close()
        await admin.aclose()


async def test_without_a_key_ttl_keys_never_expire(redis_server: Any) -> None:
    admin = Redis.from_url(redis_server.url)
    store = RedisOnlineStore(redis_server.url)
    try:
        await admin.flushdb()
        await store.write("exp", [EntityWrite("b", {"x": (2, _now_us())})])
        assert await admin.pttl(entity_key("exp", "b")) == -1  # exists, no expiry
    finally:
        await store.close()
        await admin.aclose()
