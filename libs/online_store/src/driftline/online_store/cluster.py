"""The online store's read path on a Redis Cluster: one pipeline per master.

On a single node the store reads many entities with one ``EVALSHA``; a Redis Cluster
refuses a command whose keys lie in different hash slots (``CROSSSLOT``), and the
entities of one read hash to as many slots as there are entities. So, as redis-py's
:class:`redis.asyncio.cluster.RedisCluster` does for a pipeline, the reads are grouped
by the master that owns each key's slot (the slot map comes from ``CLUSTER SLOTS``) and
each group goes to its master as one pipelined write of ``HMGET`` commands on a
:class:`~driftline.online_store.resp.PipelinedRedis` connection of its own; the masters
answer concurrently. A ``MOVED`` reply (the slot has a new owner: a failover or a
resharding) updates the map and resends the command there, an ``ASK`` reply (the slot is
being migrated) resends it after ``ASKING``; a node that cannot be reached fails the
read and has the whole map fetched again before the next one, so reads find the
promoted replica once the cluster has failed over.

redis-py's cluster client would do the same at ~200 µs of Python per command (see
:mod:`~driftline.online_store.resp`); here a read of 100 entities costs one packed write
and one future per master.

>>> slot_of("dl:f:fraud:u1") == slot_of("dl:f:other:{dl:f:fraud:u1}")
True
>>> slot_of(f"dl:f:__generation__:{{{tag_for_slot(5461)}}}")
5461
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from ssl import SSLContext
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError, RedisError, ResponseError

from driftline.online_store.resp import PipelinedRedis, RedisUrl

__all__ = ["ClusterPipelinedRedis", "SlotRange", "slot_of", "tag_for_slot"]

MAX_REDIRECTS = 5
"""Rounds of ``MOVED``/``ASK`` one call follows before it gives up (redis-py's default: 3)."""


def slot_of(key: str) -> int:
    """The hash slot of ``key`` (``CLUSTER KEYSLOT``: CRC16 of the key or of its ``{tag}``)."""
    return key_slot(key.encode())


@cache
def tag_for_slot(slot: int) -> str:
    """A short hash tag whose slot is ``slot``: ``{tag}`` in a key puts the key there.

    Found by trying decimal numbers (CRC16 spreads them evenly: ~16,000 tries, a few
    milliseconds in C), once per slot and process.
    """
    if not 0 <= slot < REDIS_CLUSTER_HASH_SLOTS:
        raise ValueError(f"a slot is in 0..{REDIS_CLUSTER_HASH_SLOTS - 1}, not {slot}")
    n = 0
    while key_slot(b"%d" % n) != slot:
        n += 1
    return str(n)


@dataclass(frozen=True)
class SlotRange:
    """Slots ``start..end`` (inclusive), served by the master at ``owner`` (``host:port``)."""

    start: int
    end: int
    owner: str


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class ClusterPipelinedRedis:
    """Keyed commands on a Redis Cluster, grouped per master and pipelined.

    ``url`` names any node (``redis://host:port/0``); the others are discovered.
    ``timeout_s``, ``ssl``, ``username`` and ``password`` are those of
    :class:`~driftline.online_store.resp.PipelinedRedis`, used for every node.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        ssl: SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        where = RedisUrl.parse(url)
        if where.db != 0:
            raise ValueError("a Redis Cluster has database 0 only: the URL must name /0")
        self.host, self.port = where.host, where.port
        self._options: dict[str, Any] = {
            "timeout_s": timeout_s,
            "ssl": ssl,
            "username": username or where.username,
            "password": password or where.password,
        }
        self._seeds: list[str] = [f"{self.host}:{self.port}"]
        self._nodes: dict[str, PipelinedRedis] = {}
        self._owners: list[str] | None = None
        """The master (``host:port``) of each slot; None until fetched or once stale."""
        self._refreshing: asyncio.Lock | None = None

    # -- the slot map -----------------------------------------------------------------------
    def node(self, address: str) -> PipelinedRedis:
        """The pipelined connection to the node at ``address`` (``host:port``)."""
        connection = self._nodes.get(address)
        if connection is None:
            connection = PipelinedRedis(f"redis://{address}/0", **self._options)
            self._nodes[address] = connection
        return connection

    async def refresh(self) -> list[str]:
        """Fetch the slot map (``CLUSTER SLOTS``) from the first node that answers."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        stale = self._owners
        async with self._refreshing:
            if self._owners is not None and self._owners is not stale:
                return self._owners  # another caller refreshed it meanwhile
            failures: list[str] = []
            for seed in list(self._seeds):
                try:
                    reply = await self.node(seed).execute("CLUSTER", "SLOTS")
                except (RedisError, OSError) as exc:
                    failures.append(f"{seed}: {exc}")
                    continue
                self._owners = self._parse_slots(reply, seed)
                return self._owners
            raise ConnectionError(
                "no node of the Redis Cluster answered CLUSTER SLOTS: " + "; ".join(failures)
            )

    def _parse_slots(self, reply: list[Any], seed: str) -> list[str]:
        owners = [""] * REDIS_CLUSTER_HASH_SLOTS
        seeds = [seed]
        for start, end, master, *replicas in reply:
            addresses = []
            for node in (master, *replicas):
                # An empty host means "the address you reached me at" (cluster spec).
                host = _text(node[0]) or seed.rpartition(":")[0]
                addresses.append(f"{host}:{int(node[1])}")
            owners[int(start) : int(end) + 1] = [addresses[0]] * (int(end) - int(start) + 1)
            seeds += [a for a in addresses if a not in seeds]
        uncovered = owners.count("")
        if uncovered:
            raise ResponseError(
                f"CLUSTERDOWN {uncovered} hash slots are not served by any node "
                f"(CLUSTER SLOTS from {seed})"
            )
        # Every node it lists (replicas too) can answer the next CLUSTER SLOTS: one that
        # is promoted after a master dies knows the new map.
        self._seeds = seeds
        return owners

    async def slot_ranges(self) -> list[SlotRange]:
        """The slot map as contiguous ranges, each with its master."""
        owners = self._owners if self._owners is not None else await self.refresh()
        ranges: list[SlotRange] = []
        start = 0
        for slot in range(1, REDIS_CLUSTER_HASH_SLOTS + 1):
            if slot == REDIS_CLUSTER_HASH_SLOTS or owners[slot] != owners[start]:
                ranges.append(SlotRange(start, slot - 1, owners[start]))
                start = slot
        return ranges

    # -- commands ---------------------------------------------------------------------------
    async def execute_keyed(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run ``commands`` (each ``(NAME, key, ...)``, one key: its second word) on the
        masters of their keys; their replies in order.

        A ``MOVED``/``ASK`` reply is followed (at most :data:`MAX_REDIRECTS` rounds);
        another error reply raises its :class:`~redis.exceptions.ResponseError`. A node
        that cannot be reached raises :class:`~redis.exceptions.ConnectionError` and has
        the slot map fetched again by the next call.
        """
        owners = self._owners if self._owners is not None else await self.refresh()
        groups: dict[str, list[int]] = {}
        for i, command in enumerate(commands):
            groups.setdefault(owners[slot_of(command[1])], []).append(i)
        replies: list[Any] = [None] * len(commands)
        pending = [(address, indices, False) for address, indices in groups.items()]
        for _ in range(MAX_REDIRECTS + 1):
            redirects = await self._round(commands, pending, replies)
            if not redirects:
                return replies
            pending = redirects
        raise ResponseError(
            f"Redis Cluster redirected a command more than {MAX_REDIRECTS} times "
            "(is a resharding or failover in progress?)"
        )

    async def _round(
        self,
        commands: Sequence[tuple[Any, ...]],
        pending: list[tuple[str, list[int], bool]],
        replies: list[Any],
    ) -> list[tuple[str, list[int], bool]]:
        """Send each group to its node (after ``ASKING`` when it is an ``ASK`` redirect),
        store the replies; the groups to resend, by where they were redirected."""
        # Every master's batch is written before any reply is awaited: they answer
        # concurrently, and no task is created per master.
        sent: list[asyncio.Future[list[Any]] | BaseException] = []
        results: list[list[Any] | BaseException] = []
        try:
            for address, indices, asking in pending:
                if asking:
                    batch = [c for i in indices for c in (("ASKING",), commands[i])]
                else:
                    batch = [commands[i] for i in indices]
                try:
                    sent.append(await self.node(address).send_many(batch))
                except (RedisError, OSError) as exc:
                    sent.append(exc)
            for outcome in sent:
                if isinstance(outcome, BaseException):
                    results.append(outcome)
                    continue
                try:
                    results.append(await outcome)
                except (RedisError, OSError) as exc:
                    results.append(exc)
        finally:
            for outcome in sent:
                if isinstance(outcome, asyncio.Future) and not outcome.done():
                    outcome.cancel()  # the caller gave up: drop the replies, keep the link
        redirects: dict[tuple[str, bool], list[int]] = {}
        for (address, indices, asking), result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, (ConnectionError, OSError)):
                    self._owners = None  # the node died: fetch the map again next time
                raise result
            got = result[1::2] if asking else result
            for i, reply in zip(indices, got, strict=True):
                if isinstance(reply, ResponseError):
                    target = self._redirect(reply, address)
                    if target is None:
                        raise reply
                    redirects.setdefault(target, []).append(i)
                else:
                    replies[i] = reply
        return [(address, indices, asking) for (address, asking), indices in redirects.items()]

    def _redirect(self, error: ResponseError, at: str) -> tuple[str, bool] | None:
        """Where a ``MOVED``/``ASK`` reply sends the command, and whether it is an ``ASK``."""
        words = str(error).split()
        if len(words) != 3 or words[0] not in ("MOVED", "ASK"):
            return None
        host, _, port = words[2].rpartition(":")
        target = f"{host or at.rpartition(':')[0]}:{port}"
        if words[0] == "ASK":
            return target, True
        # The slot has a new master, and after a failover so have its neighbours: the
        # next call fetches the whole map (as redis-py does after MOVED, in steps).
        self._owners = None
        return target, False

    async def close(self) -> None:
        """Close every node's connection."""
        nodes, self._nodes = list(self._nodes.values()), {}
        for connection in nodes:
            await connection.close()
