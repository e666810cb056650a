"""Rebuilding the online store after it was wiped, without anyone asking.

Redis is a cache of what the features worker knows: each entity's aggregates
live in the worker's state table (changelog-backed), each entity's newest raw
values on the feature log ``driftline.features``.  When Redis loses its data
(``FLUSHALL``, a restart without persistence, a failover to an empty replica)
nothing would bring the values back until each entity's next event, so serving
would read MISSING for every quiet entity.

:class:`OnlineRebuild` notices: the worker keeps a *generation marker* in the
store (the store's optional :attr:`~driftline.online_store.OnlineStore.generation_marker`
capability; Redis keeps it at ``dl:f:__generation__``, a Redis Cluster one key per
slot range: :class:`~driftline.online_store.redis_store.ClusterGenerationMarker`) and
checks it every few seconds.  When it is gone (or another worker replaced it after a
wipe), the worker rewrites every entity it holds: aggregates from its table (as of the
entity's newest event time, exactly what the batch loop writes) and raw values from the
entity's newest vector on the feature log.  Writes are event-time monotonic, so anything
written by the live batch loop meanwhile is never replaced by an older value;
the last step (reading the log's tail, snapshotting the table, writing) runs
under :attr:`OnlineRebuild.lock`, which the batch loop holds per batch, so a
rebuild never interleaves with a batch.

The marker is written after a rebuild, so a worker killed mid-rebuild rebuilds
again when it starts.  With several workers, each rebuilds the entities of the
partitions it holds when it sees the marker missing or changed.  A store that
declares no marker gets one in this process's memory: it is rebuilt when the
worker starts, and a wipe goes unnoticed until then.

>>> from driftline.features.aggregates import EntityState
>>> from driftline.specs import FeatureSetCatalog, FeatureSetSpec
>>> spec = FeatureSetSpec(name="a", version=1, entity="e", fields={"x": {"type": "int"}},
...     aggregations=[{"fn": "count", "window": "1h"}])
>>> state = EntityState(spec)
>>> _ = state.apply(10.0, {"x": 3})
>>> writes = rebuild_writes(FeatureSetCatalog([spec]), [("a:e1", state)],
...     {("a", "e1"): NewestRaw(10_000_000, -1, {"x": 3})})
>>> sorted(writes["a"][0].values.items())
[('count_1h', (1, 10000000)), ('x', (3, 10000000))]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from driftline.contracts.messages import FeatureValue, FeatureVector
from driftline.contracts.topics import FEATURES
from driftline.features.aggregates import EntityState
from driftline.online_store import (
    EntityWrite,
    GenerationMarker,
    InMemoryGenerationMarker,
    OnlineStore,
    StoreUnavailable,
)
from driftline.security.kafka_auth import KafkaAuth, kafka_client_options
from driftline.specs import FeatureSetCatalog

__all__ = [
    "NewestRaw",
    "OnlineRebuild",
    "marker_for",
    "rebuild_writes",
]

log = logging.getLogger(__name__)

_WRITE_CHUNK = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")


def marker_for(store: OnlineStore) -> GenerationMarker:
    """The generation marker ``store`` declares, or one in this process's memory."""
    if store.generation_marker is not None:
        return store.generation_marker
    log.info(
        "%s declares no generation marker: it is rebuilt when the worker starts, "
        "and a wipe is not noticed until then",
        store.where,
    )
    return InMemoryGenerationMarker()


# -- what to write -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewestRaw:
    """An entity's newest raw values on the feature log: event time (µs), log position, values."""

    t_us: int
    order: int
    """Position on the log (offset); among equal event times the later one wins."""
    values: Mapping[str, FeatureValue]


def _epoch_us(t: datetime) -> int:
    delta = t - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def newer(seen: NewestRaw | None, candidate: NewestRaw) -> bool:
    """Whether ``candidate`` replaces ``seen`` (newer event time; later on the log on ties)."""
    if seen is None:
        return True
    return (candidate.t_us, candidate.order) >= (seen.t_us, seen.order)


def rebuild_writes(
    catalog: FeatureSetCatalog,
    states: Iterable[tuple[str, Any]],
    raw: Mapping[tuple[str, str], NewestRaw],
) -> dict[str, list[EntityWrite]]:
    """The online values of every entity in ``states`` (table key ``featureset:entity``).

    Aggregates come from the state, as of its newest event time; raw fields from
    ``raw`` (the entity's newest vector) with that vector's event time.  States
    of undeclared feature sets, or that are not :class:`EntityState`, are skipped.
    """
    out: dict[str, list[EntityWrite]] = {}
    for key, state in states:
        if not isinstance(state, EntityState):
            continue
        featureset, _, entity_id = key.partition(":")
        spec = catalog.get(featureset)
        if spec is None or not entity_id:
            continue
        values: dict[str, tuple[FeatureValue, int]] = {}
        newest = raw.get((featureset, entity_id))
        if newest is not None:
            for name in spec.fields:
                if name in newest.values:
                    values[name] = (newest.values[name], newest.t_us)
        if state.max_time is not None:
            max_us = round(state.max_time * 1e6)
            for name, value in state.current().items():
                values[name] = (value, max_us)
        if values:
            out.setdefault(featureset, []).append(EntityWrite(entity_id, values))
    return out


class FeatureLogIndex:
    """Each entity's newest raw values, read from ``driftline.features`` from the start."""

    def __init__(
        self, bootstrap_servers: str, client_id: str, security: KafkaAuth | None = None
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._security = security
        self.newest: dict[tuple[str, str], NewestRaw] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._parts: list[TopicPartition] = []

    async def open(self) -> None:
        """Connect and position at the start of every partition."""
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self._security),
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-features-rebuild",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        self._consumer = consumer
        self._parts = [TopicPartition(FEATURES.name, p) for p in range(FEATURES.partitions)]
        consumer.assign(self._parts)
        await consumer.seek_to_beginning(*self._parts)

    async def close(self) -> None:
        """Disconnect."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def catch_up(self) -> int:
        """Read up to the log's current end; return how many vectors were read."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("FeatureLogIndex.open() first")
        ends = await consumer.end_offsets(self._parts)
        read = 0
        while True:
            behind = [tp for tp in self._parts if await consumer.position(tp) < ends[tp]]
            if not behind:
                return read
            batch = await consumer.getmany(*behind, timeout_ms=500, max_records=5000)
            for records in batch.values():
                for record in records:
                    read += 1
                    self._add(record.offset, record.value)

    def _add(self, offset: int, value: bytes | None) -> None:
        if value is None:
            return
        try:
            vector = FeatureVector.model_validate_json(value)
        except ValidationError:
            # Not written by a features worker; nothing to rebuild from it.
            log.warning("skipping an unreadable record on %s at offset %d", FEATURES.name, offset)
            return
        key = (vector.featureset, vector.entity_id)
        candidate = NewestRaw(_epoch_us(vector.event_time), offset, vector.values)
        if newer(self.newest.get(key), candidate):
            self.newest[key] = candidate


# -- the watcher ---------------------------------------------------------------------------


class OnlineRebuild:
    """Watches the generation marker and rebuilds the online store when it disappears.

    ``states`` returns the worker's current ``(table key, EntityState)`` pairs;
    ``ready`` says whether the table has been recovered from its changelog (no
    rebuild happens before).  Run the batch loop's store writes under
    :meth:`exclusive` so that a rebuild never interleaves with a batch.
    """

    def __init__(
        self,
        *,
        store: OnlineStore,
        catalog: FeatureSetCatalog,
        bootstrap_servers: str,
        states: Callable[[], Iterable[tuple[str, Any]]],
        ready: Callable[[], bool],
        client_id: str = "driftline",
        interval_s: float = 2.0,
        marker: GenerationMarker | None = None,
        kafka_security: KafkaAuth | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.marker = marker if marker is not None else marker_for(store)
        self.lock = asyncio.Lock()
        self.generation: str | None = None
        """The marker token this worker's entities were last written under."""
        self.rebuilds = 0
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._kafka_security = kafka_security
        self._states = states
        self._ready = ready
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None

    async def exclusive(self, step: Awaitable[T]) -> T:
        """Await ``step`` (a batch) with no rebuild writing at the same time."""
        async with self.lock:
            return await step

    def start(self) -> None:
        """Start checking the marker in the background."""
        self._task = asyncio.create_task(self._watch(), name="online-rebuild")
        self._task.add_done_callback(_report_end)

    async def stop(self) -> None:
        """Stop checking (a rebuild in progress is abandoned; the next start redoes it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            try:
                await self.check()
            except (StoreUnavailable, KafkaError, OSError) as exc:
                log.warning(
                    "online store check failed (%s); retrying in %.0fs", exc, self._interval
                )
            await asyncio.sleep(self._interval)

    async def check(self) -> bool:
        """One check; rebuild if the marker is gone or changed.  Return whether it rebuilt."""
        if not self._ready():
            return False
        current = await self.marker.read()
        if current is not None and (self.generation is None or current == self.generation):
            # Present at start: the store holds what was written before; adopt it.
            self.generation = current
            return False
        if current is None and self.generation is not None:
            log.warning(
                "%s lost its data (its generation marker is gone); rebuilding", self.store.where
            )
        await self.rebuild()
        self.generation = await self.marker.claim(uuid.uuid4().hex)
        return True

    async def rebuild(self) -> int:
        """Rewrite every entity this worker holds; return how many were written."""
        index = FeatureLogIndex(self._bootstrap, self._client_id, self._kafka_security)
        await index.open()
        try:
            read = await index.catch_up()  # the bulk, while batches go on
            async with self.lock:
                read += await index.catch_up()  # what the batches wrote meanwhile
                writes = rebuild_writes(self.catalog, list(self._states()), index.newest)
                written = 0
                for featureset, rows in writes.items():
                    for i in range(0, len(rows), _WRITE_CHUNK):
                        await self.store.write(featureset, rows[i : i + _WRITE_CHUNK])
                    written += len(rows)
        finally:
            await index.close()
        self.rebuilds += 1
        log.info("online store rebuilt: %d entities (%d feature-log records read)", written, read)
        return written


def _report_end(task: asyncio.Task[None]) -> None:
    # The watcher only ends by cancellation; anything else is a bug worth a loud line,
    # because the online store would no longer be rebuilt after a wipe.
    if not task.cancelled() and task.exception() is not None:
        log.critical("the online-store watcher stopped", exc_info=task.exception())
