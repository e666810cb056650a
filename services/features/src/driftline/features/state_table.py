"""The entity-state table: per-partition state in memory, backed by a compacted changelog.

This is the table model of Kafka Streams and Faust: the worker owns some
partitions of ``driftline.events.valid``; for each it keeps every entity's
:class:`~driftline.features.aggregates.EntityState` in memory and writes each
changed state to partition *p* of the changelog topic (compacted, keyed by
``featureset:entity``).  When a partition is assigned to a worker -- at start,
after a crash, or when it moves from another worker -- the worker replays
changelog partition *p* to its end before it processes any event of *p*.

Recovery reads raw bytes only (the newest record per key wins, a tombstone
deletes) and decodes a state the first time it is used, so a restart with a
large changelog costs about what a plain consumer read of it costs.

>>> from driftline.specs import FeatureSetCatalog, FeatureSetSpec
>>> spec = FeatureSetSpec(name="a", version=1, entity="e", fields={"x": {"type": "int"}},
...     aggregations=[{"fn": "count", "window": "1h"}])
>>> codec = StateCodec(FeatureSetCatalog([spec]))
>>> table = StateTable(codec)
>>> state = EntityState(spec)
>>> _ = state.apply(10.0, {"x": 3})
>>> state.offset = 7
>>> table.adopt(0, {"a:e1": codec.encode("a:e1", state)})
>>> table.get("a:e1").offset, table.get("a:e1").current()
(7, {'count_1h': 1})
>>> table.drop(0)
>>> table.get("a:e1") is None
True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from driftline.features.aggregates import DEFAULT_LATENESS_S, EntityState
from driftline.security.kafka_auth import KafkaAuth, kafka_client_options
from driftline.specs import FeatureSetCatalog

__all__ = ["StateCodec", "StateTable", "ensure_changelog", "read_changelog"]

log = logging.getLogger(__name__)

CHANGELOG_CONFIGS = {
    "cleanup.policy": "compact",
    # Small segments and a low dirty ratio let the broker compact the changelog
    # down to about one record per entity soon, which keeps recovery short.
    "segment.ms": "300000",
    "min.cleanable.dirty.ratio": "0.1",
}


class StateCodec:
    """``EntityState`` <-> the changelog's compact JSON (``{"f": featureset, "o", "t", "a"}``).

    The feature-set name travels with the state so that it is rebuilt with the
    right spec; a state of a feature set no longer declared decodes to None.
    """

    def __init__(
        self, catalog: FeatureSetCatalog, allowed_lateness_s: float = DEFAULT_LATENESS_S
    ) -> None:
        self.catalog = catalog
        self.allowed_lateness_s = allowed_lateness_s

    def encode(self, key: str, state: EntityState) -> bytes:
        """The changelog value of ``state`` (stored under table key ``key``)."""
        featureset = key.split(":", 1)[0]
        return orjson.dumps({"f": featureset, **state.to_dict()})

    def decode(self, raw: bytes) -> EntityState | None:
        """The state in a changelog value; None for an undeclared feature set."""
        data = orjson.loads(raw)
        spec = self.catalog.get(data.get("f", ""))
        if spec is None:
            log.warning("dropping stored state of undeclared feature set %r", data.get("f"))
            return None
        return EntityState.from_dict(spec, data, self.allowed_lateness_s)


class StateTable:
    """``table key -> EntityState`` for the partitions this worker owns.

    Values recovered from the changelog stay bytes until first read.  The batch
    processor uses :meth:`get` and item assignment; the worker records which
    partition a key belongs to with :meth:`note` once a batch is durable.
    """

    def __init__(self, codec: StateCodec) -> None:
        self.codec = codec
        self._data: dict[str, EntityState | bytes] = {}
        self._keys: dict[int, set[str]] = {}

    # -- the processor's view -----------------------------------------------------

    def get(self, key: str) -> EntityState | None:
        """The state of ``key``, decoded on first use; None when there is none."""
        value = self._data.get(key)
        if value is None or isinstance(value, EntityState):
            return value
        state = self.codec.decode(value)
        if state is None:
            del self._data[key]
        else:
            self._data[key] = state
        return state

    def __getitem__(self, key: str) -> EntityState:
        state = self.get(key)
        if state is None:
            raise KeyError(key)
        return state

    def __setitem__(self, key: str, state: EntityState) -> None:
        self._data[key] = state

    # -- ownership ------------------------------------------------------------------

    def note(self, partition: int, keys: Iterator[str] | list[str]) -> None:
        """Record that ``keys`` belong to ``partition`` (dropped with it)."""
        self._keys.setdefault(partition, set()).update(keys)

    def adopt(self, partition: int, raw: Mapping[str, bytes]) -> None:
        """Take over ``partition`` with its recovered states (changelog bytes by key)."""
        self.drop(partition)
        self._data.update(raw)
        self._keys[partition] = set(raw)

    def drop(self, partition: int) -> None:
        """Forget every state of ``partition`` (it was revoked)."""
        for key in self._keys.pop(partition, ()):
            self._data.pop(key, None)

    def drop_unowned(self) -> int:
        """Forget every state no partition owns (neither recovered nor :meth:`note`-d): the
        states a batch created before it failed.  Returns how many were dropped."""
        owned = set().union(*self._keys.values())
        stale = [key for key in self._data if key not in owned]
        for key in stale:
            del self._data[key]
        return len(stale)

    @property
    def partitions(self) -> set[int]:
        """The partitions whose states are held."""
        return set(self._keys)

    def items(self) -> list[tuple[str, EntityState]]:
        """Every held state, decoded (for a rebuild of the online store)."""
        out = []
        for key in list(self._data):
            state = self.get(key)
            if state is not None:
                out.append((key, state))
        return out

    def __len__(self) -> int:
        return len(self._data)


async def ensure_changelog(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    replication_factor: int,
    *,
    security: KafkaAuth | None = None,
) -> bool:
    """Create the compacted changelog topic unless it exists; return whether it was created.

    In secure mode the features principal owns the topics of its prefix (CREATE included:
    :data:`driftline.contracts.access.KAFKA_ACCESS`), so it makes its changelog itself.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, **kafka_client_options(security)
    )
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, partitions, replication_factor, topic_configs=CHANGELOG_CONFIGS)]
        )
        return True
    except TopicAlreadyExistsError:
        return False
    finally:
        await admin.close()


async def read_changelog(
    bootstrap_servers: str,
    topic: str,
    partitions: list[int],
    client_id: str,
    *,
    security: KafkaAuth | None = None,
) -> dict[int, dict[str, bytes]]:
    """Replay ``partitions`` of the changelog to their current end: the newest value per key.

    A record without a value (a tombstone) deletes its key.
    """
    out: dict[int, dict[str, bytes]] = {p: {} for p in partitions}
    if not partitions:
        return out
    started = time.monotonic()
    consumer = AIOKafkaConsumer(
        **kafka_client_options(security),
        bootstrap_servers=bootstrap_servers,
        client_id=f"{client_id}-features-recovery",
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    read = 0
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        pending = set(tps)
        while True:
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if not pending:
                break
            batch: dict[Any, list[Any]] = await consumer.getmany(
                *pending, timeout_ms=500, max_records=20000
            )
            for tp, records in batch.items():
                states = out[tp.partition]
                for record in records:
                    read += 1
                    if record.key is None:
                        continue
                    key = record.key.decode()
                    if record.value is None:
                        states.pop(key, None)
                    else:
                        states[key] = record.value
    finally:
        await consumer.stop()
    log.info(
        "recovered %d entity states of partitions %s from %d changelog records in %.1fs",
        sum(len(s) for s in out.values()),
        ",".join(map(str, partitions)),
        read,
        time.monotonic() - started,
    )
    return out
