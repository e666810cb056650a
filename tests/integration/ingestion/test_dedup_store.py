"""The Redis dedup store against the harness's redis-server."""

from __future__ import annotations

import uuid
from typing import Any

from redis.asyncio import Redis

from driftline.ingestion.dedup import RedisDedupStore


async def test_a_claim_is_released_only_by_its_owner(redis_server: Any) -> None:
    redis = Redis.from_url(redis_server.url)
    store = RedisDedupStore(redis, window_s=60, prefix=f"test:{uuid.uuid4().hex}:")
    try:
        assert await store.claim_many([("event:e1", "a"), ("event:e2", "a")]) == [True, True]
        assert await store.claim_many([("event:e1", "b")]) == [False]
        # Another owner's release leaves the claim; the owner's own drops it.
        await store.release_many([("event:e1", "b")])
        assert await store.claim_many([("event:e1", "b")]) == [False]
        await store.release_many([("event:e1", "a"), ("event:unknown", "a")])
        assert await store.claim_many([("event:e1", "b"), ("event:e2", "b")]) == [True, False]
        await store.release_many([])
    finally:
        await redis.aclose()
