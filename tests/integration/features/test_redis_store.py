"""The online-store conformance suite on the harness's real redis-server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from driftline.features.online_store import OnlineStore, RedisOnlineStore
from driftline.features.store_checks import ALL_CHECKS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
async def test_redis_store(
    check: Callable[[OnlineStore], Awaitable[None]], redis_server: Any
) -> None:
    admin = Redis.from_url(redis_server.url)
    await admin.flushdb()
    await admin.aclose()
    store = RedisOnlineStore(redis_server.url)
    try:
        await check(store)
    finally:
        await store.close()
