"""The Faust worker: ``driftline.events.valid`` in, feature vectors and online values out.

Exactly-once *effect* under crashes, by idempotent updates (not Kafka
transactions, which cannot cover Redis anyway):

* every entity state in the Faust table records the offset of the last event
  applied to it; an entity's events share one partition, in order, so an event
  at or below that offset is a redelivery and is skipped;
* a batch's effects are made durable in this order: online values (awaited),
  then feature vectors and dead letters (awaited) -- so a vector seen on
  ``driftline.features`` means its event is already in the online values --
  then the changed states on the table's changelog (awaited); only then does
  the agent take the next batch, which is when Faust acks the batch's events
  and may commit their offsets.

So a crash at any point leaves one of: nothing durable (the batch is redone
from the recovered state), vectors/values durable but not the state (redone:
the same vectors again — consumers deduplicate by event id — and the same
online values, which event-time-monotonic writes make harmless), or both
durable but not the offsets (the replayed events are skipped).  Nothing is
lost and no aggregate counts an event twice.  Faust's own commit flush is not
relied on: its producer buffer flush returns after a 0.1 s timeout even when
messages are still queued, so the changelog sends here are awaited one by one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.serializers.codecs import Codec
from opentelemetry import trace
from opentelemetry.trace import Span
from redis.exceptions import RedisError

from driftline.contracts.topics import DLQ, EVENTS_VALID, FEATURES
from driftline.features.aggregates import DEFAULT_LATENESS_S, EntityState
from driftline.features.metrics import FeaturesMetrics
from driftline.features.online_rebuild import OnlineRebuild, tables_recovered
from driftline.features.online_store import OnlineStore
from driftline.features.processor import BatchOutcome, FeatureProcessor, SourceRecord
from driftline.kafkaio import context_from_headers, encode_value, headers_from_context
from driftline.runtime import Health
from driftline.specs import FeatureSetCatalog
from driftline.telemetry import messaging_attributes

__all__ = ["FeaturesWorker", "StateCodec"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer("driftline.features")

APP_ID = "driftline-features"
"""Faust application id: the consumer group, and the prefix of the changelog topic."""
TABLE_NAME = "entity-state"
EXIT_BATCH_FAILED = 70
"""Exit status when a batch failed unexpectedly (its events are redone after restart)."""


class StateCodec(Codec):
    """Serialises :class:`EntityState` for the table's changelog as compact JSON.

    The feature-set name travels with the state so that it can be rebuilt with
    the right spec; a state of a feature set no longer declared decodes to None
    (and is dropped from the table).
    """

    def __init__(self, catalog: FeatureSetCatalog, allowed_lateness_s: float) -> None:
        super().__init__()
        self.catalog = catalog
        self.allowed_lateness_s = allowed_lateness_s

    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, tuple):
            raise TypeError(f"expected (featureset, EntityState), got {type(obj).__name__}")
        featureset, state = obj
        return json.dumps({"f": featureset, **state.to_dict()}, separators=(",", ":")).encode()

    def _loads(self, s: bytes) -> Any:
        data = json.loads(s)
        spec = self.catalog.get(data.get("f", ""))
        if spec is None:
            log.warning("dropping stored state of undeclared feature set %r", data.get("f"))
            return None
        return EntityState.from_dict(spec, data, self.allowed_lateness_s)


class _TableStates:
    """The Faust table's store seen as ``key -> EntityState`` by the processor."""

    def __init__(self, table: Any) -> None:
        self._data = table.data

    def get(self, key: str) -> EntityState | None:
        value = self._data.get(key)
        return value if isinstance(value, EntityState) else None

    def __getitem__(self, key: str) -> EntityState:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: EntityState) -> None:
        self._data[key] = value


class FeaturesWorker:
    """Owns the Faust app, the feature-log producer and the batch loop.

    ``start()`` returns once the app is running (partitions are assigned and
    tables recovered in the background; readiness reports it); ``stop()``
    finishes the batch in flight before the Faust app stops.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        replication_factor: int,
        catalog: FeatureSetCatalog,
        store: OnlineStore,
        metrics: FeaturesMetrics,
        health: Health,
        state_dir: Path,
        batch_max: int = 1000,
        batch_within_s: float = 0.005,
        allowed_lateness_s: float = DEFAULT_LATENESS_S,
        client_id: str = "driftline",
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.metrics = metrics
        self.health = health
        self.processor = FeatureProcessor(catalog, allowed_lateness_s=allowed_lateness_s)
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._batch_max = batch_max
        self._batch_within = batch_within_s
        self._producer: AIOKafkaProducer | None = None
        self._specs_by_name = {s.name: s for s in catalog}
        state_dir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            APP_ID,
            broker=";".join(f"kafka://{b.strip()}" for b in bootstrap_servers.split(",")),
            store="memory://",
            datadir=str(state_dir),
            processing_guarantee="at_least_once",
            web_enabled=False,
            topic_partitions=EVENTS_VALID.partitions,
            topic_replication_factor=replication_factor,
            topic_allow_declare=True,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            broker_commit_interval=1.0,
            # A killed worker's partitions move on after this long, not Faust's 60 s.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=2.0,
            table_standby_replicas=0,
            stream_buffer_maxsize=4 * batch_max,
            broker_client_id=f"{client_id}-features",
        )
        self._codec = StateCodec(catalog, allowed_lateness_s)
        self.source = self.app.topic(
            EVENTS_VALID.name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=EVENTS_VALID.partitions,
            internal=False,
        )
        # Typed Any: the attributes set below belong to faust's Table class, not
        # to the TableT interface app.Table() is annotated with.
        table: Any = self.app.Table(
            TABLE_NAME,
            partitions=EVENTS_VALID.partitions,
            key_type=str,
            # Recovery replays the changelog; rolling segments hourly lets the
            # broker compact it down to one record per entity.
            extra_topic_configs={"segment.ms": "3600000", "min.cleanable.dirty.ratio": "0.1"},
        )
        self.table = table
        # Faust derives serializers from the types and builds the changelog topic
        # when the table registers; rebuild it so that sends and recovery both
        # use the state codec.
        self.table.key_serializer = "raw"
        self.table.value_serializer = self._codec
        self.table.changelog_topic = self.table._new_changelog_topic()
        self._states = _TableStates(self.table)
        self._in_flight: asyncio.Task[None] | None = None
        self.app.agent(self.source, name="features")(self._agent)
        # Rewrites Redis from the table and the feature log after it was wiped.
        self.online_rebuild = OnlineRebuild(
            store=store,
            catalog=catalog,
            bootstrap_servers=bootstrap_servers,
            states=lambda: self.table.data.items(),
            ready=lambda: tables_recovered(self.app),
            client_id=client_id,
        )

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the feature-log producer and the Faust app."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-features-log",
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_batch_size=256 * 1024,
        )
        await self._producer.start()
        self.health.set("worker_started", False)
        await self.app.start()
        self.online_rebuild.start()
        self.health.set("worker_started", True)

    async def stop(self) -> None:
        """Let the batch in flight finish, then stop Faust and the producer."""
        await self.online_rebuild.stop()
        if self._in_flight is not None and not self._in_flight.done():
            await asyncio.wait({self._in_flight}, timeout=30)
        await self.app.stop()
        if self._producer is not None:
            await self._producer.stop()

    # -- the agent ------------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        async for events in stream.take_events(self._batch_max, within=self._batch_within):
            records = [
                SourceRecord(
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value or b"",
                    _headers(e.message.headers),
                )
                for e in events
            ]
            # Events of a batch are acked (and may be committed) as soon as this
            # body returns or is cancelled, so the batch's effects are shielded
            # from cancellation and awaited to the end first.
            task = asyncio.ensure_future(self.online_rebuild.exclusive(self.handle_batch(records)))
            self._in_flight = task
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                await asyncio.wait({task}, timeout=30)
                raise
            except Exception:
                # A bug, not a bad message (those are dead-lettered).  Leaving
                # this body would ack the batch with its effects half done, so
                # the process ends here and the batch is redone after restart.
                log.critical("batch failed; exiting so that it is redone", exc_info=True)
                logging.shutdown()
                os._exit(EXIT_BATCH_FAILED)
            finally:
                self._in_flight = None
            self._observe_lag(events)

    async def handle_batch(self, records: Sequence[SourceRecord]) -> None:
        """Process one batch and make its effects durable in the safe order."""
        started = time.perf_counter()
        started_ns = time.time_ns()
        self.metrics.messages_in.labels(topic=EVENTS_VALID.name).inc(len(records))
        outcome = self.processor.process(records, self._states)  # type: ignore[arg-type]
        spans = self._event_spans(records, outcome, started_ns)
        try:
            await self._retrying(
                "publish and write", lambda: self._publish_and_write(outcome, spans)
            )
            await self._retrying("persist state", lambda: self._persist_states(outcome))
        finally:
            for span in spans:
                if span is not None:
                    span.end()
        self.metrics.replayed.inc(outcome.replayed)
        self.metrics.batch_latency.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(records))

    @staticmethod
    def _event_spans(
        records: Sequence[SourceRecord], outcome: BatchOutcome, started_ns: int
    ) -> list[Span | None]:
        """A ``process`` span per vector whose event arrived inside a trace (else None).

        Each continues its event's trace (the parent is the span that wrote the
        event) and covers the batch's work until the vector is durable; untraced
        high-rate streams pay nothing for tracing.
        """
        spans: list[Span | None] = []
        for index in outcome.vector_sources:
            rec = records[index]
            if not rec.headers:
                spans.append(None)
                continue
            parent = context_from_headers(rec.headers)
            if not trace.get_current_span(parent).get_span_context().is_valid:
                spans.append(None)
                continue
            spans.append(
                tracer.start_span(
                    f"{EVENTS_VALID.name} process",
                    context=parent,
                    kind=trace.SpanKind.CONSUMER,
                    start_time=started_ns,
                    attributes=messaging_attributes(
                        EVENTS_VALID.name,
                        "process",
                        partition=rec.partition,
                        offset=rec.offset,
                        key=rec.key,
                    ),
                )
            )
        return spans

    async def _publish_and_write(
        self, outcome: BatchOutcome, spans: Sequence[Span | None] = ()
    ) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("the worker is not started")
        # Online values first, vectors after: a vector on the feature log then
        # implies that its event is in the online values, so whoever reads the
        # log (a test, a freshness probe, a client told "event seen") never gets
        # the entity's older values from GetOnlineFeatures.  Sending the vectors
        # while the Redis pipeline ran let the last batch's vectors be consumed
        # before its values were written: a late event's count was then read one
        # short.
        t0 = time.perf_counter()
        for featureset, writes in outcome.writes.items():
            await self.store.write(featureset, writes)
        self.metrics.redis_write_latency.observe(time.perf_counter() - t0)
        futures: list[asyncio.Future[Any]] = []
        for i, (entity_id, payload) in enumerate(outcome.vectors):
            span = spans[i] if i < len(spans) else None
            # The vector carries its event's trace on to training, monitoring, serving.
            headers = (
                headers_from_context(trace.set_span_in_context(span)) if span is not None else None
            )
            futures.append(
                await producer.send(
                    FEATURES.name, value=payload, key=entity_id.encode(), headers=headers or None
                )
            )
        for key, letter in outcome.dead_letters:
            futures.append(await producer.send(DLQ.name, value=encode_value(letter), key=key))
        if futures:
            await asyncio.gather(*futures)
        self.metrics.messages_out.labels(topic=FEATURES.name).inc(len(outcome.vectors))
        if outcome.dead_letters:
            self.metrics.messages_out.labels(topic=DLQ.name).inc(len(outcome.dead_letters))
            for _, letter in outcome.dead_letters:
                self.metrics.dead_letters.labels(reason=letter.reason.value).inc()
                log.warning(
                    "dead-lettered %s/%s@%s: %s",
                    letter.source_topic,
                    letter.source_partition,
                    letter.source_offset,
                    letter.detail,
                )

    async def _persist_states(self, outcome: BatchOutcome) -> None:
        if not outcome.states:
            return
        topic = self.table.changelog_topic
        pending = []
        for key, (partition, state) in outcome.states.items():
            featureset = key.split(":", 1)[0]
            pending.append(
                await topic.send(
                    key=key, value=(featureset, state), partition=partition, force=True
                )
            )
        await asyncio.gather(*pending)

    async def _retrying(self, what: str, step: Any) -> None:
        # Storage and broker outages are waited out: giving up would let Faust
        # ack events whose effects are not durable.
        delay = 0.1
        while True:
            try:
                await step()
                if not self.health.conditions.get("io_ok", True):
                    self.health.set("io_ok", True)
                return
            except (RedisError, KafkaError, OSError) as exc:
                self.health.set("io_ok", False)
                self.metrics.errors.labels(kind=type(exc).__name__).inc()
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _observe_lag(self, events: Sequence[Any]) -> None:
        last: dict[Any, int] = {}
        for e in events:
            last[e.message.tp] = e.message.offset
        consumer = self.app.consumer
        for tp, offset in last.items():
            high = consumer.highwater(tp)
            if high is not None:
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(high - offset - 1, 0)
                )


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    """Faust's message headers (a list of pairs, or a mapping) as a tuple of pairs."""
    if not raw:
        return ()
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((str(k), bytes(v)) for k, v in items if v is not None)
