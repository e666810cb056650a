"""The built-in online store: Redis hashes, one per entity, written by a Lua script.

Chosen by ``features.online_store.type: redis`` (the default); its parameters are
:class:`RedisStoreSettings`, and without them it uses the ``redis`` section
(``redis.host``, ``redis.port``, ``redis.db``) and ``features.online_key_ttl_s``,
as before store types existed.  Every Redis error becomes
:class:`~driftline.online_store.base.StoreUnavailable`.

It declares the :class:`~driftline.online_store.base.GenerationMarker`
capability: a plain key (:data:`MARKER_KEY`) that ``FLUSHALL`` removes with the data.

On a Redis Cluster (``cluster=True``, ``redis.cluster``) every entity is one hash, so one
key and one slot, and the same scripts run with the keys of one slot per call: writes go
through redis-py's :class:`~redis.asyncio.cluster.RedisCluster` (one ``EVALSHA`` per slot,
pipelined per master), reads through :class:`~driftline.online_store.cluster.
ClusterPipelinedRedis` (one pipeline of ``HMGET`` per master), and the generation marker
is one key per slot range (:class:`ClusterGenerationMarker`), so the loss of any one
master's data is noticed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any, cast
from urllib.parse import urlparse

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from driftline.contracts.messages import FeatureValue
from driftline.online_store.base import (
    MISSING,
    EntityWrite,
    FeatureRead,
    FeatureStatus,
    GenerationMarker,
    OnlineStore,
    StoreUnavailable,
)
from driftline.online_store.cluster import ClusterPipelinedRedis, slot_of, tag_for_slot
from driftline.online_store.registry import OnlineStoreType
from driftline.online_store.resp import PipelinedRedis
from driftline.security.redis_auth import RedisAuth, redis_auth, redis_connection
from driftline.settings import PlatformSettings
from driftline.specs import FeatureSetSpec

__all__ = [
    "MARKER_KEY",
    "REDIS",
    "STORE_IDENTITY",
    "ClusterGenerationMarker",
    "RedisGenerationMarker",
    "RedisOnlineStore",
    "RedisStoreSettings",
    "entity_key",
]

STORE_IDENTITY = "features"
"""Whose Redis user a store built from settings logs in as in secure mode (by default)."""

MARKER_KEY = "dl:f:__generation__"
"""The key of the generation marker; its disappearance means the store was wiped."""


def entity_key(featureset: str, entity_id: str) -> str:
    """The Redis key of one entity's hash: ``dl:f:{featureset}:{entity}``."""
    return f"dl:f:{featureset}:{entity_id}"


# Each hash field holds "<event time µs>|<JSON value>".  For every feature the
# script keeps the stored one when its event time is newer than the new one's,
# atomically with respect to other writers.  One call covers many entities:
# KEYS are their hashes, and ARGV[k] is one JSON array of strings
# [name, event time µs, JSON value, name, …] for KEYS[k] -- one argument per
# entity rather than three per feature, because building the command's
# arguments, not Redis, is what a write costs.  The last ARGV is the key
# expiry in milliseconds (0: keys never expire), renewed by every write.
_WRITE_SCRIPT = """
local written = 0
local expiry = tonumber(ARGV[#KEYS + 1])
for k = 1, #KEYS do
  local args = cjson.decode(ARGV[k])
  local n = #args / 3
  if n > 0 then
    local fields = {}
    for i = 1, n do fields[i] = args[3 * i - 2] end
    local current = redis.call('HMGET', KEYS[k], unpack(fields))
    local updates = {}
    for i = 1, n do
      local t = tonumber(args[3 * i - 1])
      local cur = current[i]
      local keep = false
      if cur then
        local bar = string.find(cur, '|', 1, true)
        if bar and tonumber(string.sub(cur, 1, bar - 1)) > t then keep = true end
      end
      if not keep then
        updates[#updates + 1] = fields[i]
        updates[#updates + 1] = args[3 * i - 1] .. '|' .. args[3 * i]
      end
    end
    if #updates > 0 then
      redis.call('HSET', KEYS[k], unpack(updates))
      written = written + #updates / 2
    end
    if expiry > 0 then redis.call('PEXPIRE', KEYS[k], expiry) end
  end
end
return written
"""

# Reads many entities in one call: KEYS are their hashes, ARGV the feature
# names; one array of values (false for a missing one) per key. (Splitting and
# typing the values in Lua was tried: it cost Redis 1.3 µs per value, more than
# Python spends on them.)
_READ_SCRIPT = """
local out = {}
for k = 1, #KEYS do
  out[k] = redis.call('HMGET', KEYS[k], unpack(ARGV))
end
return out
"""

_ENTITIES_PER_CALL = 64
"""Entities per script call: bounds how long one call holds Redis (readers wait
behind it) while keeping the per-call overhead small."""


_FAILURES = (RedisError, RedisClusterException, OSError)
"""What a Redis call raises when Redis fails (redis-py's cluster client raises
:class:`~redis.exceptions.RedisClusterException`, e.g. when no node can be reached)."""

_NULL_PAIR = b"null|null"


def _chunks(
    keyed: list[tuple[str, EntityWrite]],
) -> Iterator[list[tuple[str, EntityWrite]]]:
    """``keyed`` in runs of at most :data:`_ENTITIES_PER_CALL` (one script call each)."""
    for first in range(0, len(keyed), _ENTITIES_PER_CALL):
        yield keyed[first : first + _ENTITIES_PER_CALL]


def _decode_at_once(rows: list[list[bytes | None]]) -> list[Any] | None:
    """Every stored value as a flat ``[event time µs, value, …]``, parsed by one orjson call.

    Each stored value is ``<event time>|<JSON>``: joined by commas, with each
    ``|`` made a comma, they form one JSON array. Parsing it in C costs a tenth
    of splitting and parsing 1,600 values one by one in Python. A missing value
    becomes ``null, null``. None when that does not hold (a ``|`` inside a
    string value, or NaN and infinities, which are not JSON): the caller then
    parses one by one.
    """
    try:
        joined = b",".join(chain.from_iterable(cast("list[list[bytes]]", rows)))
    except TypeError:  # a missing value (None) somewhere
        joined = b",".join([raw or _NULL_PAIR for row in rows for raw in row])
    if joined.count(b"|") != sum(len(row) for row in rows):  # an empty value fails this too
        return None
    try:
        flat: list[Any] = orjson.loads(b"[" + joined.replace(b"|", b",") + b"]")
    except orjson.JSONDecodeError:
        return None
    return flat


def _decode_one_by_one(rows: list[list[bytes | None]]) -> list[Any]:
    """:func:`_decode_at_once`'s result for any stored values (through the standard JSON parser)."""
    flat: list[Any] = []
    for row in rows:
        for raw in row:
            if not raw:
                flat += (None, None)
                continue
            t_text, _, payload = raw.partition(b"|")
            flat += (int(t_text), json.loads(payload))
    return flat


def _json_value(value: FeatureValue) -> str:
    """``json.dumps(value)``, with the common cases (finite numbers) done directly."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and value - value == 0:  # type: ignore[operator]
        return float.__repr__(value)
    return json.dumps(value)


class RedisGenerationMarker(GenerationMarker):
    """The marker as a plain Redis string at :data:`MARKER_KEY` (``SET NX``), no expiry."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def read(self) -> str | None:
        try:
            raw = await self._redis.get(MARKER_KEY)
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def claim(self, token: str) -> str:
        try:
            await self._redis.set(MARKER_KEY, token, nx=True)
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        current = await self.read()
        # Wiped again between the two calls: ours is as good as any.
        return token if current is None else current


class ClusterGenerationMarker(GenerationMarker):
    """The marker on a Redis Cluster: one key per slot range, on that range's master.

    A single key would live on one master, and a wipe of another (its data lost with
    its replica, a ``FLUSHALL`` sent to it alone) would go unnoticed. So each range of
    the slot map gets its own key, ``dl:f:__generation__:{<tag>}`` with a hash tag of the
    range's first slot (a failover keeps the ranges, so the keys too). The token is the
    ranges' tokens joined, in order and without repeats: when one range lost its key, a
    worker's claim refills only that one, the token changes, and every worker, not just
    the one that noticed, sees a new generation and rebuilds what it holds.
    """

    def __init__(self, redis: RedisCluster, reads: ClusterPipelinedRedis) -> None:
        self._redis = redis
        self._reads = reads

    async def _keys(self) -> list[str]:
        ranges = await self._reads.slot_ranges()
        return [f"{MARKER_KEY}:{{{tag_for_slot(r.start)}}}" for r in ranges]

    async def read(self) -> str | None:
        try:
            keys = await self._keys()
            async with self._redis.pipeline() as pipe:
                for key in keys:
                    pipe.get(key)
                values = await pipe.execute()
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        if any(v is None for v in values):
            return None
        tokens = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
        return ",".join(dict.fromkeys(tokens))

    async def claim(self, token: str) -> str:
        try:
            keys = await self._keys()
            async with self._redis.pipeline() as pipe:
                for key in keys:
                    pipe.set(key, token, nx=True)
                await pipe.execute()
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        current = await self.read()
        return token if current is None else current


def _unavailable(exc: BaseException) -> StoreUnavailable:
    """The contract's error for a Redis (or socket) failure, keeping Redis' own words."""
    return StoreUnavailable(f"the online store is unavailable: {exc}")


class RedisOnlineStore(OnlineStore):
    """Redis hashes ``dl:f:{featureset}:{entity}``, one field per feature.

    Writes go through a Lua script (event-time monotonic), one call per
    ``_ENTITIES_PER_CALL`` entities, in one pipeline per write; reads are one
    read-script call over a pipelined connection (:mod:`~driftline.online_store.resp`).
    Uses hiredis for parsing.  The generation marker lives in the same database,
    through the store's own client, so a wipe of the data removes it too.
    """

    def __init__(
        self,
        url: str,
        *,
        key_ttl_s: float | None = None,
        max_connections: int = 32,
        pool_timeout_s: float = 5.0,
        auth: RedisAuth | None = None,
        cluster: bool = False,
    ) -> None:
        """``key_ttl_s``: Redis drops an entity's hash this long after its last write
        (None: never), so entities that stopped sending events do not stay in memory.
        ``auth``: secure mode's TLS and ACL login (:func:`driftline.security.redis_auth.
        redis_auth`), for both the write pool and the pipelined read connection.
        ``cluster``: ``url`` names a node of a Redis Cluster (see the module's docstring).
        """
        pool_url, secure = redis_connection(url, auth)
        pipelined = {} if auth is None else auth.pipelined_kwargs()
        self._cluster: RedisCluster | None = None
        self._cluster_reads: ClusterPipelinedRedis | None = None
        if cluster:
            # max_connections is per node; a write takes one connection per master.
            self._cluster = RedisCluster.from_url(
                pool_url, max_connections=max_connections, **secure
            )
            self._cluster_reads = ClusterPipelinedRedis(url, **pipelined)
            self._redis: Redis | RedisCluster = self._cluster
        else:
            # A blocking pool makes a burst of readers queue for a connection
            # instead of failing with "Too many connections".
            pool = BlockingConnectionPool.from_url(
                pool_url, max_connections=max_connections, timeout=pool_timeout_s, **secure
            )
            self._redis = Redis(connection_pool=pool)
        expiry_ms = 0 if key_ttl_s is None else max(1, round(key_ttl_s * 1000))
        self._expiry_ms = str(expiry_ms).encode()
        self._script = self._redis.register_script(_WRITE_SCRIPT)
        self._script_loaded = False
        self._read_sha = self._redis.register_script(_READ_SCRIPT).sha
        # Reads (the gRPC path) go through one pipelined connection: see resp.py.
        self._reads = PipelinedRedis(url, **pipelined)
        if self._cluster is None or self._cluster_reads is None:
            self.where = f"Redis at {self._reads.host}:{self._reads.port}"
            self.generation_marker: GenerationMarker = RedisGenerationMarker(
                cast(Redis, self._redis)
            )
        else:
            self.where = f"Redis Cluster at {self._reads.host}:{self._reads.port}"
            self.generation_marker = ClusterGenerationMarker(self._cluster, self._cluster_reads)

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except _FAILURES as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        await self._reads.close()
        if self._cluster_reads is not None:
            await self._cluster_reads.close()
        await self._redis.aclose()

    async def write(self, featureset: str, writes: Sequence[EntityWrite]) -> None:
        if not writes:
            return
        # The script is loaded once so the pipeline carries EVALSHA only; a Redis
        # restart empties its script cache, hence the one reload-and-retry.
        try:
            if not self._script_loaded:
                await self._load_script()
            try:
                await self._write(featureset, writes)
            except NoScriptError:
                await self._load_script()
                await self._write(featureset, writes)
        except _FAILURES as exc:
            raise _unavailable(exc) from exc

    async def _load_script(self) -> None:
        await self._redis.script_load(_WRITE_SCRIPT)
        self._script_loaded = True

    async def _write(self, featureset: str, writes: Sequence[EntityWrite]) -> None:
        keyed = [(entity_key(featureset, w.entity_id), w) for w in writes]
        pipe: Any
        if self._cluster is None:
            pipe = self._redis.pipeline(transaction=False)
            calls = list(_chunks(keyed))
        else:
            # A script's keys must share a slot: each call carries one slot's entities
            # (redis-py's cluster pipeline sends each master its calls in one batch).
            pipe = self._cluster.pipeline()
            by_slot: dict[int, list[tuple[str, EntityWrite]]] = {}
            for pair in keyed:
                by_slot.setdefault(slot_of(pair[0]), []).append(pair)
            calls = [chunk for group in by_slot.values() for chunk in _chunks(group)]
        sha = self._script.sha
        for chunk in calls:
            keys = [key for key, _ in chunk]
            packed = []
            for _, w in chunk:
                fields: list[str] = []
                for name, (value, t_us) in w.values.items():
                    fields += (name, str(t_us), _json_value(value))
                packed.append(orjson.dumps(fields))
            # execute_command: redis-py's cluster pipeline refuses its evalsha() method
            # (it cannot load a script on the node that lacks it); NOSCRIPT is handled in
            # write(), which loads the script on every master and writes again.
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *packed, self._expiry_ms)
        await pipe.execute()

    async def read(
        self,
        featureset: FeatureSetSpec,
        entity_ids: Sequence[str],
        names: Sequence[str],
        now: float,
    ) -> list[list[FeatureRead]]:
        if not entity_ids:
            return []
        keys = [entity_key(featureset.name, e) for e in entity_ids]
        if self._cluster_reads is not None:
            rows = await self._read_cluster(keys, names)
        else:
            # One command for every entity: packing a pipeline of HMGETs costs
            # more Python than Redis spends answering them.
            execute = self._reads.execute
            try:
                try:
                    rows = await execute("EVALSHA", self._read_sha, len(keys), *keys, *names)
                except NoScriptError:  # the first read, or Redis restarted and lost its scripts
                    await execute("SCRIPT", "LOAD", _READ_SCRIPT)
                    rows = await execute("EVALSHA", self._read_sha, len(keys), *keys, *names)
            except _FAILURES as exc:
                raise _unavailable(exc) from exc
        flat = _decode_at_once(rows) or _decode_one_by_one(rows)
        oldest_us = (now - featureset.ttl) * 1e6
        present, stale, missing = FeatureStatus.PRESENT, FeatureStatus.STALE, MISSING
        # tuple.__new__ skips the named tuple's Python-level __new__ (half the cost).
        new, read_type = tuple.__new__, FeatureRead
        width = 2 * len(names)
        out = []
        for first in range(0, len(flat), width):
            reads: list[FeatureRead] = []
            append = reads.append
            it = iter(flat[first : first + width])
            for t_us, value in zip(it, it, strict=True):
                if t_us is None:
                    append(missing)
                elif t_us < oldest_us:
                    append(new(read_type, (None, t_us, stale)))
                else:
                    append(new(read_type, (value, t_us, present)))
            out.append(reads)
        return out

    async def _read_cluster(
        self, keys: list[str], names: Sequence[str]
    ) -> list[list[bytes | None]]:
        """The entities' values on a Redis Cluster: one ``HMGET`` each, pipelined per master
        (the read script would need every key in one slot)."""
        assert self._cluster_reads is not None
        try:
            rows: list[list[bytes | None]] = await self._cluster_reads.execute_keyed(
                [("HMGET", key, *names) for key in keys]
            )
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        return rows


class RedisStoreSettings(BaseModel):
    """Parameters of ``features.online_store`` when its ``type`` is ``redis`` (all optional)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    url: str | None = None
    """``redis://[user:password@]host:port/db``; None builds it from the ``redis`` section."""
    key_ttl_s: float | None = Field(default=None, gt=0)
    """Redis drops an entity's values this long after its last write (like Feast's
    ``key_ttl_seconds``); None uses ``features.online_key_ttl_s`` (None there too: never)."""
    max_connections: int = Field(default=32, ge=1)
    """Connections the write path may hold (reads share one pipelined connection)."""
    pool_timeout_s: float = Field(default=5.0, gt=0)
    """How long a write waits for a free connection before it fails."""
    cluster: bool | None = None
    """``url`` names a node of a Redis Cluster; None: ``redis.cluster``."""

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and urlparse(url).scheme != "redis":
            raise ValueError(f"must be a redis://host:port/db URL, not {url!r}")
        return url


def _create(params: RedisStoreSettings, platform: PlatformSettings) -> RedisOnlineStore:
    """The store for ``features.online_store``; defaults from ``redis.*`` and ``features.*``."""
    key_ttl_s = params.key_ttl_s
    if key_ttl_s is None:
        key_ttl_s = platform.features.online_key_ttl_s
    store = RedisOnlineStore(
        params.url or platform.redis.url,
        key_ttl_s=key_ttl_s,
        max_connections=params.max_connections,
        pool_timeout_s=params.pool_timeout_s,
        # The features service is the store's one writer and reader (serving reads
        # through its gRPC API): its identity, unless security.identity names another.
        auth=redis_auth(platform, STORE_IDENTITY),
        cluster=platform.redis.cluster if params.cluster is None else params.cluster,
    )
    store.unreachable_hint = (
        "Start it with `driftline infra up` or set DRIFTLINE_REDIS__HOST / DRIFTLINE_REDIS__PORT."
        if params.url is None
        else "Start it or correct features.online_store.url."
    )
    return store


REDIS: OnlineStoreType[RedisStoreSettings] = OnlineStoreType(RedisStoreSettings, _create)
"""The ``redis`` store type (registered through the ``driftline.online_stores`` entry point)."""
