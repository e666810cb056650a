"""Event-id deduplication inside a time window.

A claim names its *owner*, the position the record came from (``topic:partition:
offset``, or an HTTP request id).  Claiming an id that the same owner already
holds succeeds: that is a replay of the same record after a crash (its earlier
transaction was aborted), not a duplicate.  Claiming an id that another owner
holds fails: a true duplicate.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from driftline.contracts.errors import UnavailableError


class DedupStore(ABC):
    """Remembers event ids for ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s

    @abstractmethod
    async def claim_many(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        """Claim ``(key, owner)`` pairs in order; True where the claim is this owner's."""

    @abstractmethod
    async def release_many(self, claims: Sequence[tuple[str, str]]) -> None:
        """Drop the ``(key, owner)`` claims this owner holds (another owner's stay)."""


class InMemoryDedupStore(DedupStore):
    """A process-local store, for unit tests and single-process tools."""

    def __init__(self, window_s: float) -> None:
        super().__init__(window_s)
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def claim_many(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        now = time.monotonic()
        while self._seen:
            key, (_, expires) = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[key]
        out = []
        for key, owner in claims:
            held = self._seen.get(key)
            if held is None:
                self._seen[key] = (owner, now + self.window_s)
                out.append(True)
            else:
                out.append(held[0] == owner)
        return out

    async def release_many(self, claims: Sequence[tuple[str, str]]) -> None:
        for key, owner in claims:
            held = self._seen.get(key)
            if held is not None and held[0] == owner:
                del self._seen[key]


class RedisDedupStore(DedupStore):
    """Claims as ``SET key owner NX PX window`` in one pipeline per batch.

    Shared by every ingestion replica and survives restarts. ``redis`` may be a
    :class:`~redis.asyncio.cluster.RedisCluster`: each claim and release touches one key,
    and redis-py's cluster pipeline sends each master the commands of its keys.
    """

    # Delete the key only while this owner holds it: compare and delete in one step.
    _RELEASE = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
        "return 0"
    )

    def __init__(
        self, redis: Redis | RedisCluster, window_s: float, prefix: str = "dl:dedup:"
    ) -> None:
        super().__init__(window_s)
        self._redis = redis
        self._prefix = prefix
        self._release = redis.register_script(self._RELEASE)

    async def claim_many(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        if not claims:
            return []
        px = int(self.window_s * 1000)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, owner in claims:
                    pipe.set(self._prefix + key, owner, nx=True, px=px, get=True)
                previous = await pipe.execute()
        except (RedisError, RedisClusterException) as exc:
            raise UnavailableError(f"dedup store (Redis) failed: {exc}") from exc
        out = []
        for (_, owner), prev in zip(claims, previous, strict=True):
            if prev is None:
                out.append(True)
            else:
                held = prev.decode() if isinstance(prev, bytes) else str(prev)
                out.append(held == owner)
        return out

    async def release_many(self, claims: Sequence[tuple[str, str]]) -> None:
        if not claims:
            return
        try:
            if isinstance(self._redis, RedisCluster):
                await self._release_on_cluster(self._redis, claims)
                return
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, owner in claims:
                    await self._release(keys=[self._prefix + key], args=[owner], client=pipe)
                await pipe.execute()
        except (RedisError, RedisClusterException) as exc:
            raise UnavailableError(f"dedup store (Redis) failed: {exc}") from exc

    async def _release_on_cluster(
        self, redis: RedisCluster, claims: Sequence[tuple[str, str]]
    ) -> None:
        """The release script by ``EVALSHA`` in a cluster pipeline (whose ``evalsha()``
        redis-py refuses: it cannot load a script on the node lacking it), loaded on every
        master (``SCRIPT LOAD``) and run again on ``NOSCRIPT``: a new cluster, a promoted
        replica."""
        for attempt in (1, 2):
            try:
                async with redis.pipeline() as pipe:
                    for key, owner in claims:
                        pipe.execute_command(
                            "EVALSHA", self._release.sha, 1, self._prefix + key, owner
                        )
                    await pipe.execute()
                return
            except NoScriptError:
                if attempt == 2:
                    raise
                await redis.script_load(self._RELEASE)
