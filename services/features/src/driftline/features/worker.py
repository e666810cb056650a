"""The features worker: ``driftline.events.valid`` in, feature vectors and online values out.

A consumer-group member on plain aiokafka with a changelog-backed state table
(:mod:`~driftline.features.state_table`: the table model of Kafka Streams and
Faust, written directly).  faust-streaming drove this loop until it was
measured: its stream machinery alone cost ~180 µs of CPU per event (5,578
events/s consuming into an agent that did nothing, against ~190,000/s for an
aiokafka ``getmany`` loop on the same broker), its table recovery decoded every
changelog record through its codec registry, and after a SIGKILL and restart it
intermittently stalled short of the end of the stream.  The budget here is
~60-100 µs per event in all.

Exactly-once *effect* under crashes, by idempotent updates (not Kafka
transactions, which cannot cover Redis anyway):

* every entity state records the offset of the last event applied to it; an
  entity's events share one partition, in order, so an event at or below that
  offset is a redelivery and is skipped;
* a batch's effects are made durable in this order: online values (awaited),
  then feature vectors and dead letters (awaited) -- so a vector seen on
  ``driftline.features`` means its event is already in the online values --
  then the changed states on the changelog (awaited); only then are the batch's
  offsets eligible for commit (committed about once a second, on revocation
  and at stop).

So a crash at any point leaves one of: nothing durable (the batch is redone
from the recovered state), vectors/values durable but not the state (redone:
the same vectors again -- consumers deduplicate by event id -- and the same
online values, which event-time-monotonic writes make harmless), or both
durable but not the offsets (the replayed events are skipped).  Nothing is
lost and no aggregate counts an event twice.

Partitions move between workers through the group's rebalance: a revoked
partition's batch in flight finishes and its offsets are committed before its
states are dropped; an assigned partition's states are replayed from the
changelog before any of its events is processed.

No record stops the worker.  Bad events are dead letters of the processor; an
event that makes processing raise anyway (a bug in an aggregate, a value a
codec refuses) is isolated: the batch's partitions get their states back from
the changelog (which holds the pre-batch states: states are persisted only once
a batch's other effects are durable), the records are redone one at a time, and
the one that raises again is dead-lettered as ``processing_error`` while the
worker goes on.  Errors of the world (broker, Redis) are retried, each failed
attempt reported to :class:`~driftline.telemetry.ConsumerHealth` so that a
partition stuck for ``kafka.stall_after_s`` shows as a stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from opentelemetry import trace
from opentelemetry.trace import Span

from driftline.contracts.messages import DlqReason
from driftline.contracts.topics import DLQ, EVENTS_VALID, FEATURES
from driftline.features.aggregates import DEFAULT_LATENESS_S
from driftline.features.metrics import FeaturesMetrics
from driftline.features.online_rebuild import OnlineRebuild
from driftline.features.processor import BatchOutcome, FeatureProcessor, SourceRecord
from driftline.features.state_table import (
    StateCodec,
    StateTable,
    ensure_changelog,
    read_changelog,
)
from driftline.kafkaio import (
    OutRecord,
    context_from_headers,
    encode_value,
    headers_from_context,
    is_record_fault,
    of_the_world,
    retry_io,
    send_batched,
)
from driftline.online_store import OnlineStore, StoreUnavailable
from driftline.runtime import Health
from driftline.security.kafka_auth import KafkaAuth, kafka_client_options
from driftline.settings import KafkaSettings
from driftline.specs import FeatureSetCatalog
from driftline.telemetry import ConsumerHealth, messaging_attributes

__all__ = ["APP_ID", "CHANGELOG_TOPIC", "FeaturesWorker"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer("driftline.features")

APP_ID = "driftline-features"
"""The consumer group of the features workers."""
CHANGELOG_TOPIC = f"{APP_ID}-entity-state-changelog"
"""Compacted changelog of the entity-state table, partitioned like ``events.valid``."""
EXIT_BATCH_FAILED = 70
"""Exit status when the batch loop failed outside any record (its events are redone after
restart)."""
_KAFKA_DEFAULTS = KafkaSettings()
COMMIT_INTERVAL_S = 1.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: FeaturesWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker._on_assigned(assigned)


class FeaturesWorker:
    """Owns the consumer, the producer, the state table and the batch loop.

    ``start()`` returns once the consumer has joined the group (partitions are
    recovered as they are assigned; readiness reports it); ``stop()`` finishes
    the batch in flight, commits and leaves the group.
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
        batch_max: int = 2000,
        allowed_lateness_s: float = DEFAULT_LATENESS_S,
        client_id: str = "driftline",
        session_timeout_s: float = 10.0,
        max_record_bytes: int = _KAFKA_DEFAULTS.max_record_bytes,
        max_message_bytes: int = _KAFKA_DEFAULTS.max_message_bytes,
        consumer_health: ConsumerHealth | None = None,
        kafka_security: KafkaAuth | None = None,
    ) -> None:
        """``max_record_bytes`` / ``max_message_bytes`` are ``kafka.max_record_bytes`` and
        ``kafka.max_message_bytes`` (how much of a record a dead letter keeps; the
        producer's ``max_request_size``); ``consumer_health`` is the service's one
        :class:`ConsumerHealth` (one on ``metrics.registry`` with a 60 s stall when None);
        ``kafka_security`` is secure mode's identity of every Kafka client it makes.
        """
        self.catalog = catalog
        self.store = store
        self.metrics = metrics
        self.health = health
        self.consumer_health = consumer_health or ConsumerHealth(
            metrics.registry, stall_after_s=_KAFKA_DEFAULTS.stall_after_s
        )
        # The worker skips an event only by dead-lettering it after processing raised.
        self.consumer_health.expect({EVENTS_VALID.name: (DlqReason.PROCESSING_ERROR.value,)})
        for spec in catalog:
            metrics.freshness.labels(featureset=spec.name)
        self.processor = FeatureProcessor(
            catalog, allowed_lateness_s=allowed_lateness_s, keep_bytes=max_record_bytes
        )
        self._max_message_bytes = max_message_bytes
        self.table = StateTable(StateCodec(catalog, allowed_lateness_s))
        self._bootstrap = bootstrap_servers
        self._kafka_security = kafka_security
        self._replication = replication_factor
        self._client_id = client_id
        self._batch_max = batch_max
        self._session_timeout_ms = int(session_timeout_s * 1000)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        # Held while a batch is processed and while partitions are revoked, so a
        # revocation waits for the batch in flight and never interleaves with it.
        self._lock = asyncio.Lock()
        self._recovering: dict[int, asyncio.Event] = {}
        self._pending_commit: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self.online_rebuild = OnlineRebuild(
            store=store,
            catalog=catalog,
            bootstrap_servers=bootstrap_servers,
            states=self.table.items,
            ready=self.recovered,
            client_id=client_id,
            kafka_security=kafka_security,
        )

    # -- lifecycle ----------------------------------------------------------------

    def recovered(self) -> bool:
        """Whether every assigned partition's states have been recovered."""
        return self._consumer is not None and not self._recovering

    async def start(self) -> None:
        """Create the changelog if needed, start the producer and join the group."""
        self.health.set("worker_started", False)
        if await ensure_changelog(
            self._bootstrap,
            CHANGELOG_TOPIC,
            EVENTS_VALID.partitions,
            self._replication,
            security=self._kafka_security,
        ):
            log.info("created changelog topic %s", CHANGELOG_TOPIC)
        self._producer = AIOKafkaProducer(
            **kafka_client_options(self._kafka_security),
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-features-log",
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_batch_size=256 * 1024,
            # What the topics take (max.message.bytes), so what passes here is accepted.
            max_request_size=self._max_message_bytes,
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            **kafka_client_options(self._kafka_security),
            bootstrap_servers=self._bootstrap,
            group_id=APP_ID,
            client_id=f"{self._client_id}-features",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Ingestion writes driftline.events.valid in transactions: a replica killed
            # mid-transaction leaves records that are aborted and written again by its
            # successor.  Read uncommitted, each would be counted twice.
            isolation_level="read_committed",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(self._session_timeout_ms // 5, 500),
            max_partition_fetch_bytes=max(2 * 1024 * 1024, self._max_message_bytes),
        )
        self._consumer.subscribe([EVENTS_VALID.name], listener=_Rebalance(self))
        await self._consumer.start()
        self._loop_task = asyncio.create_task(self._run(), name="features-batches")
        self._loop_task.add_done_callback(_report_end)
        self.online_rebuild.start()
        self.health.set("worker_started", True)

    async def stop(self) -> None:
        """Let the batch in flight finish, commit, leave the group, stop the producer."""
        self._stopping = True
        await self.online_rebuild.stop()
        if self._loop_task is not None:
            done, _ = await asyncio.wait({self._loop_task}, timeout=30)
            if not done:
                self._loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._loop_task
        if self._consumer is not None:
            await self._commit(force=True)
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    # -- rebalances -----------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            await self._commit(force=True)
            for tp in revoked:
                self.table.drop(tp.partition)
                self._pending_commit.pop(tp, None)
        if revoked:
            log.info("partitions revoked: %s", _names(revoked))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        fresh = sorted(tp.partition for tp in assigned if tp.partition not in self.table.partitions)
        if not fresh:
            return
        log.info("partitions assigned: %s; recovering their states", _names(assigned))
        for p in fresh:
            self._recovering[p] = asyncio.Event()
        self.health.set("recovered", False)
        try:
            await self._recover_states(fresh)
        finally:
            for p in fresh:
                event = self._recovering.pop(p, None)
                if event is not None:
                    event.set()
            if not self._recovering:
                self.health.set("recovered", True)

    async def _recover_states(self, partitions: Sequence[int]) -> None:
        """Replace the states of ``partitions`` with those on the changelog."""
        recovered = await self._read_changelog(partitions)
        for p in partitions:
            self.table.adopt(p, recovered[p])

    async def _roll_back(self, partitions: Sequence[int]) -> None:
        """Undo what a failed batch did to the states of ``partitions`` (it persisted none).

        The changed states come back from the changelog; the ones the batch created
        are not there (nor owned by any partition) and are dropped, or the event that
        created one would look applied when it is redone.  Only while no other batch
        is in flight (its new states are not owned yet either).
        """
        await self._recover_states(partitions)
        self.table.drop_unowned()

    async def _read_changelog(self, partitions: Sequence[int]) -> dict[int, dict[str, bytes]]:
        """The changelog's states of ``partitions`` (retried until the broker answers)."""
        while True:
            try:
                return await read_changelog(
                    self._bootstrap,
                    CHANGELOG_TOPIC,
                    list(partitions),
                    self._client_id,
                    security=self._kafka_security,
                )
            except (KafkaError, OSError) as exc:
                log.warning("changelog recovery failed (%s); retrying in 1s", exc)
                await asyncio.sleep(1.0)

    # -- the batch loop -----------------------------------------------------------------

    async def _run(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("the worker is not started")
        while not self._stopping:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=self._batch_max)
            except KafkaError as exc:
                self.metrics.errors.labels(kind=type(exc).__name__).inc()
                log.warning("fetching events failed (%s); retrying in 1s", exc)
                await asyncio.sleep(1.0)
                continue
            if not batches:
                await self._commit()
                continue
            # A partition assigned a moment ago may still be recovering.
            for tp in batches:
                waiting = self._recovering.get(tp.partition)
                if waiting is not None:
                    await waiting.wait()
            async with self._lock:
                owned = consumer.assignment()
                records = [
                    SourceRecord(
                        r.partition, r.offset, r.key, r.value or b"", tuple(r.headers or ())
                    )
                    for tp, rs in batches.items()
                    if tp in owned  # revoked meanwhile: its new owner redoes these
                    for r in rs
                ]
                if records:
                    await self._guarded(records)
                    for tp, rs in batches.items():
                        if tp in owned and rs:
                            self._pending_commit[tp] = rs[-1].offset + 1
                    self._observe_lag(consumer, batches)
                await self._commit()

    async def _guarded(self, records: Sequence[SourceRecord]) -> None:
        # The batch's effects are awaited to the end even when the loop is cancelled.
        task = asyncio.ensure_future(self.online_rebuild.exclusive(self.handle_records(records)))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait({task}, timeout=30)
            raise
        except Exception:
            # Not a record's fault (those are isolated in handle_records): going on
            # would commit a batch with its effects half done, so the process ends
            # here and the batch is redone after restart.
            log.critical("batch failed; exiting so that it is redone", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_BATCH_FAILED)

    async def handle_records(self, records: Sequence[SourceRecord]) -> None:
        """:meth:`handle_batch`, with a record that makes it raise isolated and dead-lettered.

        When the batch raises a record fault (:func:`is_record_fault`), the states of
        its partitions are recovered from the changelog (the pre-batch states) and
        its records are handled one at a time, each made durable before the next; a
        record that raises on its own gets its partition's states recovered again
        and is dead-lettered as ``processing_error``.  Any other error propagates.
        """
        self.metrics.messages_in.labels(topic=EVENTS_VALID.name).inc(len(records))
        try:
            await self.handle_batch(records)
            return
        except Exception as exc:
            if not is_record_fault(exc):
                raise
            first = records[0]
            log.warning(
                "a batch of %d events from %s[%d]@%d failed on a record (%s: %s); recovering "
                "its partitions' states and redoing its events one at a time",
                len(records), EVENTS_VALID.name, first.partition, first.offset,
                type(exc).__name__, exc, exc_info=True,
            )  # fmt: skip
        await self._roll_back(sorted({r.partition for r in records}))
        for rec in records:
            try:
                await self.handle_batch([rec])
            except Exception as exc:
                if not is_record_fault(exc):
                    raise
                await self._roll_back([rec.partition])
                await self._dead_letter_failed(rec, exc)

    async def _dead_letter_failed(self, rec: SourceRecord, exc: Exception) -> None:
        """Dead-letter ``rec``, whose processing raised ``exc``, as ``processing_error``."""
        where = f"{EVENTS_VALID.name}[{rec.partition}]@{rec.offset}"
        log.error("processing the event at %s raised; dead-lettering it", where, exc_info=exc)
        detail = (
            f"processing the event raised {type(exc).__name__}: {exc} (a bug this event "
            "exercises; it can be replayed from the dead-letter topic once fixed)"
        )
        letter = self.processor.dead_letter(rec, DlqReason.PROCESSING_ERROR, detail)
        producer = self._producer
        if producer is None:
            raise RuntimeError("the worker is not started")

        async def send() -> None:
            await (await producer.send(DLQ.name, value=encode_value(letter), key=rec.key))

        try:
            await self._retrying(
                "dead-letter", send, {(EVENTS_VALID.name, rec.partition): rec.offset}
            )
        except Exception as send_exc:
            if not is_record_fault(send_exc):
                raise
            # The letter itself was refused: the event is still readable at its offset.
            self.consumer_health.skip(
                EVENTS_VALID.name, rec.partition, rec.offset, DlqReason.PROCESSING_ERROR.value,
                f"{detail}; its dead letter was refused too ({type(send_exc).__name__}: "
                f"{send_exc})",
            )  # fmt: skip
            return
        self.metrics.messages_out.labels(topic=DLQ.name).inc()
        self.metrics.dead_letters.labels(reason=letter.reason.value).inc()
        self.consumer_health.skip(
            EVENTS_VALID.name, rec.partition, rec.offset, DlqReason.PROCESSING_ERROR.value,
            f"dead-lettered: {detail}", event_id=_event_id(rec.value),
        )  # fmt: skip

    async def _commit(self, force: bool = False) -> None:
        consumer = self._consumer
        if consumer is None or not self._pending_commit:
            return
        if not force and time.monotonic() - self._last_commit < COMMIT_INTERVAL_S:
            return
        offsets = {tp: OffsetAndMetadata(o, "") for tp, o in self._pending_commit.items()}
        try:
            await consumer.commit(offsets)
            self._pending_commit.clear()
        except KafkaError as exc:
            # Harmless: the events after the last commit are redelivered and skipped.
            log.info("offset commit failed (%s); the events are skipped when redelivered", exc)
        self._last_commit = time.monotonic()

    async def handle_batch(self, records: Sequence[SourceRecord]) -> None:
        """Process one batch and make its effects durable in the safe order.

        I/O failures are retried (see :meth:`_retrying`); a record fault (an
        exception the records cause) propagates with the batch's effects possibly
        half done and the in-memory states of its partitions changed:
        :meth:`handle_records` recovers from that.
        """
        started = time.perf_counter()
        started_ns = time.time_ns()
        positions: dict[tuple[str, int], int] = {}
        for rec in records:
            positions.setdefault((EVENTS_VALID.name, rec.partition), rec.offset)
        outcome = self.processor.process(records, self.table)  # type: ignore[arg-type]
        # Encoded before any effect: a state the codec refuses fails the batch
        # while nothing of it is durable yet.
        changelog = self._changelog_records(outcome)
        spans = self._event_spans(records, outcome, started_ns)
        try:
            await self._retrying(
                "publish and write", lambda: self._publish_and_write(outcome, spans), positions
            )
            await self._retrying(
                "persist state", lambda: self._persist_states(changelog), positions
            )
        finally:
            for span in spans:
                if span is not None:
                    span.end()
        self.consumer_health.progressed(positions)
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
        for featureset, writes in outcome.writes.items():
            self.metrics.observe_freshness(featureset, writes)
        out: list[OutRecord] = []
        for i, (entity_id, payload) in enumerate(outcome.vectors):
            span = spans[i] if i < len(spans) else None
            # The vector carries its event's trace on to training, monitoring, serving.
            headers = (
                headers_from_context(trace.set_span_in_context(span)) if span is not None else None
            )
            out.append((entity_id.encode(), payload, headers, None))
        futures = await send_batched(producer, FEATURES.name, out)
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

    def _changelog_records(
        self, outcome: BatchOutcome
    ) -> tuple[list[OutRecord], dict[int, list[str]]]:
        """The changed states as changelog records, and the keys per partition."""
        encode = self.table.codec.encode
        out: list[OutRecord] = []
        by_partition: dict[int, list[str]] = {}
        for key, (partition, state) in outcome.states.items():
            out.append((key.encode(), encode(key, state), None, partition))
            by_partition.setdefault(partition, []).append(key)
        return out, by_partition

    async def _persist_states(
        self, changelog: tuple[list[OutRecord], dict[int, list[str]]]
    ) -> None:
        out, by_partition = changelog
        if not out:
            return
        producer = self._producer
        if producer is None:
            raise RuntimeError("the worker is not started")
        await asyncio.gather(*await send_batched(producer, CHANGELOG_TOPIC, out))
        for partition, keys in by_partition.items():
            self.table.note(partition, keys)

    async def _retrying(self, what: str, step: Any, positions: dict[tuple[str, int], int]) -> None:
        """Await ``step()`` until it succeeds; I/O errors are retried (:func:`retry_io`).

        Storage and broker outages are waited out, with a jittered exponential
        back-off from 0.1 s up to 5 s: giving up would let the events be committed
        with effects that are not durable.  Each failure clears the ``io_ok`` health
        condition and is reported to :attr:`consumer_health` at ``positions`` (the
        first offset per partition of the records at hand).  A record fault (a record
        too large for the broker …) and any error not of I/O are raised at once:
        retrying cannot help.
        """

        def report(exc: Exception, delay: float) -> None:
            self.health.set("io_ok", False)
            self.metrics.errors.labels(kind=type(exc).__name__).inc()
            self.consumer_health.failed(positions, f"{what}: {type(exc).__name__}: {exc}")
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)

        await retry_io(
            step, first_s=0.1, max_s=5.0, on_retry=report, retryable=_of_io_and_the_world
        )
        if not self.health.conditions.get("io_ok", True):
            self.health.set("io_ok", True)

    def _observe_lag(self, consumer: AIOKafkaConsumer, batches: dict[Any, list[Any]]) -> None:
        for tp, records in batches.items():
            if not records:
                continue
            high = consumer.highwater(tp)
            if high is not None:
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(high - records[-1].offset - 1, 0)
                )


def _of_io_and_the_world(exc: Exception) -> bool:
    """An I/O error (the online store, Kafka, sockets) the records at hand did not cause."""
    return isinstance(exc, StoreUnavailable | KafkaError | OSError) and of_the_world(exc)


def _event_id(value: bytes) -> str | None:
    """The event id in a record's value, if it has one (for log lines)."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    event_id = data.get("event_id") if isinstance(data, dict) else None
    return event_id if isinstance(event_id, str) else None


def _names(tps: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps))


def _report_end(task: asyncio.Task[None]) -> None:
    # The loop ends only at stop (or by cancellation); anything else means no
    # more events are processed, which must not pass quietly.
    if not task.cancelled() and task.exception() is not None:
        log.critical("the features batch loop stopped", exc_info=task.exception())
        logging.shutdown()
        os._exit(EXIT_BATCH_FAILED)
