"""Serving's two Kafka loops: following ``driftline.models`` and writing ``driftline.predictions``.

Every replica follows the whole models log itself (no consumer group: each
replica must see every promotion), starting from the log's end after loading
the registry's current aliases, so a restart does not replay history.  A
registered version starts loading when its registration is read, so that its
promotion swaps it in without a download; the model libraries are imported at
start, so that the first promotion is not slower than the others.

One record never stops the follower: a record that does not parse, and a
promotion to a version that cannot be served (no such model or version, an
artifact that fails verification or does not unpickle) are skipped with a log
line and counted in ``driftline_records_skipped_total{topic, reason}``, and the
version served before keeps serving.  A promotion that fails because the
registry or the feature store is unreachable is tried again (in log order) until
it loads, and a long outage shows as a stalled partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry import trace
from pydantic import ValidationError

from driftline.contracts.errors import DriftlineError, NotFoundError
from driftline.contracts.messages import RegistryEvent
from driftline.contracts.topics import MODELS, PREDICTIONS
from driftline.kafkaio import (
    OutRecord,
    RecordBatch,
    batch_records,
    context_from_headers,
    headers_from_context,
    is_record_fault,
    unreadable_detail,
)
from driftline.serving.model_table import ModelTable
from driftline.serving.prediction_log import (
    EncodedPrediction,
    PredictionLog,
    encode_entry,
    timestamp_text,
)
from driftline.serving.serving_metrics import ServingMetrics
from driftline.telemetry import ConsumerHealth, messaging_attributes
from driftline.telemetry.loop import model_event_attributes

__all__ = ["ModelFollower", "PredictionLogWriter"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer("driftline.serving")

SKIP_REASONS: dict[str, tuple[str, ...]] = {
    MODELS.name: ("unreadable", "unknown_model", "unknown_version", "processing_error")
}
"""Every reason this loop can skip a record of each topic for, created at 0 on
``driftline_records_skipped_total`` at start (see :meth:`ConsumerHealth.expect`)."""


class ModelFollower:
    """Loads the registry's current aliases, then applies each new ``driftline.models`` event.

    Events are applied one at a time, in log order, so two quick promotions end
    with the later one serving.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        table: ModelTable,
        metrics: ServingMetrics,
        health: ConsumerHealth,
        *,
        retry_s: float,
    ) -> None:
        self._consumer = consumer
        self._table = table
        self._metrics = metrics
        self._health = health
        health.expect(SKIP_REASONS)
        self._retry_s = retry_s

    async def _pin_end(self) -> None:
        await self._consumer.topics()
        partitions = self._consumer.partitions_for_topic(MODELS.name) or {0}
        tps = [TopicPartition(MODELS.name, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            # Resolve the position now: events after this point are applied below,
            # events before it are covered by the registry snapshot.
            await self._consumer.position(tp)

    async def _sync(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._table.sync()
                return
            except DriftlineError as exc:
                log.warning(
                    "registry not reachable yet (%s); retrying in %.1fs", exc.message, self._retry_s
                )
            try:
                await asyncio.wait_for(stop.wait(), self._retry_s)
            except TimeoutError:
                continue

    async def _warm_up(self) -> None:
        started = time.monotonic()
        try:
            await self._table.warm_up()
        except Exception:
            # Not fatal: the first load pays the cost instead.
            log.exception("warming up model loading failed")
            return
        log.info("model libraries ready for loading in %.1fs", time.monotonic() - started)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until ``stop`` is set."""
        # The first load must not pay for importing the model libraries: do it now,
        # alongside the start-up, rather than when the first champion is promoted.
        warm = asyncio.create_task(self._warm_up())
        try:
            await self._follow(stop)
        finally:
            warm.cancel()  # the import thread finishes on its own

    async def _follow(self, stop: asyncio.Event) -> None:
        await self._pin_end()
        await self._sync(stop)
        while not stop.is_set():
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    await self.follow_record(
                        tp.partition, record.offset, record.value, stop, headers=record.headers
                    )

    async def follow_record(
        self,
        partition: int,
        offset: int,
        value: bytes | None,
        stop: asyncio.Event,
        *,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        """Apply one ``driftline.models`` record; returns once it is applied or skipped
        (or ``stop`` is set while the registry is unreachable).

        Applying it continues the trace the record carries (the registry's publish,
        under the promotion of the retraining loop): the load, the swap and the new
        version's first answer are in it.
        """
        self._metrics.base.messages_in.labels(topic=MODELS.name).inc()
        try:
            event = RegistryEvent.model_validate_json(value or b"")
        except ValidationError as exc:
            # A malformed record must not stop promotions from being followed.
            self._metrics.registry_events.labels(outcome="invalid").inc()
            detail = unreadable_detail(value, exc)
            self._health.skip(MODELS.name, partition, offset, "unreadable", detail)
            return
        with tracer.start_as_current_span(
            f"{MODELS.name} process",
            context=context_from_headers(headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                **messaging_attributes(MODELS.name, "process", partition=partition, offset=offset),
                **model_event_attributes(event),
            },
        ):
            await self._apply(event, partition, offset, stop)

    async def _apply(
        self, event: RegistryEvent, partition: int, offset: int, stop: asyncio.Event
    ) -> None:
        here = (MODELS.name, partition)
        while True:
            known = event.model_name in self._table.names
            try:
                applied = await self._table.apply(event)
            except Exception as exc:
                if is_record_fault(exc):
                    self._refuse(event, partition, offset, exc, known=known)
                    return
                # The registry or the feature store is down: skipping would lose the
                # promotion for good, so the same event is tried again, in log order.
                self._health.failed({here: offset}, exc)
                log.warning(
                    "cannot apply %s of model %r v%d (event %s) yet: %s; retrying in %.1fs",
                    event.kind.value,
                    event.model_name,
                    event.version,
                    event.event_id,
                    exc,
                    self._retry_s,
                )
                try:
                    await asyncio.wait_for(stop.wait(), self._retry_s)
                    return
                except TimeoutError:
                    continue
            self._health.progressed([here])
            self._metrics.registry_events.labels(outcome="applied" if applied else "ignored").inc()
            return

    def _refuse(
        self, event: RegistryEvent, partition: int, offset: int, exc: Exception, *, known: bool
    ) -> None:
        """Skip an event naming a version this replica cannot serve (what served stays)."""
        self._metrics.registry_events.labels(outcome="invalid").inc()
        if isinstance(exc, NotFoundError):
            reason = "unknown_version" if known else "unknown_model"
        else:
            reason = "processing_error"
        message = exc.message if isinstance(exc, DriftlineError) else f"{type(exc).__name__}: {exc}"
        self._health.skip(
            MODELS.name,
            partition,
            offset,
            reason,
            f"{event.kind.value} of model {event.model_name[:200]!r} v{event.version} "
            f"(alias {event.alias or 'champion'!r}) not applied, what served before keeps "
            f"serving: {message}",
            event_id=event.event_id,
            # Not one of the load's known refusals (a tampered or missing artifact): an
            # unpickling failure or a bug; the traceback says which.
            error=None if isinstance(exc, DriftlineError) else exc,
        )


class PredictionLogWriter:
    """Drains the :class:`PredictionLog` into ``driftline.predictions`` in batches.

    Shadow models are scored here, off the response path. Entries are encoded
    straight to JSON (:func:`encode_entry`: one record per single prediction, one
    ``PredictionBatch`` per batch entry, split only when larger than
    ``max_record_bytes``) and appended to one producer batch per partition,
    partitioned like the producer's own key partitioner (murmur2 of the key: the
    entity id of a single prediction, so an entity's predictions stay in order on
    one partition; the request id of a batch, whose rows span entities).
    ``linger_s`` lets a trickle of predictions gather into one produce request.
    Everything is counted in rows: ``log_written{kind}`` the rows handed to Kafka,
    a failed send the rows dropped (``kafka_error``, logged), an entry that cannot be
    encoded its rows (``unencodable``); the writer carries on. ``messages_out``
    counts Kafka records.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        buffer: PredictionLog,
        metrics: ServingMetrics,
        *,
        batch: int,
        linger_s: float = 0.05,
        max_in_flight: int = 4,
        max_record_bytes: int | None = None,
    ) -> None:
        self._producer = producer
        self._buffer = buffer
        self._metrics = metrics
        self._batch = batch
        self._linger_s = linger_s
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._settling: set[asyncio.Task[_Counts]] = set()
        # Room for the key, the traceparent header and the record's framing.
        self._max_value_bytes = (
            None if max_record_bytes is None else max(1024, max_record_bytes - _RECORD_OVERHEAD)
        )

    async def write_once(self, timeout_s: float | None = 0.2) -> int:
        """Send up to one batch; returns the number of rows handed to the producer."""
        items = await self._buffer.take(self._batch, timeout_s, linger_s=self._linger_s)
        self._metrics.log_buffered.set(len(self._buffer))
        if not items:
            return 0
        producer, topic = self._producer, PREDICTIONS.name
        try:
            partitions = sorted(await producer.partitions_for(topic))
        except KafkaError as exc:
            rows = sum(item.rows for item in items)
            self._buffer.drop("kafka_error", rows)
            log.warning("%d predictions not logged: no metadata for %s: %s", rows, topic, exc)
            return 0
        out: list[OutRecord] = []
        encoded: list[EncodedPrediction] = []
        headers_by_trace: dict[int, list[tuple[str, bytes]]] = {}
        stamps: dict[float, str] = {}
        for item in items:
            stamp = stamps.get(item.served_at)
            if stamp is None:
                stamp = stamps[item.served_at] = timestamp_text(item.served_at)
            try:
                records = encode_entry(item, stamp, max_bytes=self._max_value_bytes)
            except (TypeError, ValueError) as exc:
                self._buffer.drop("unencodable", item.rows)
                log.warning("prediction %s not logged: %s", item.request_id, exc)
                continue
            # Entries of one RPC share one trace context: inject it once.
            trace = item.trace
            headers = headers_by_trace.get(id(trace)) if trace is not None else None
            if headers is None and trace is not None:
                headers = headers_by_trace[id(trace)] = headers_from_context(trace)
            for record in records:
                out.append((record.key, record.value, headers, None))
                encoded.append(record)
        pending: list[tuple[asyncio.Future[object], _Counts] | None] = []
        for batch in await batch_records(producer, topic, out, partitions):
            counts = _Counts()
            for index in batch.indices:
                counts.add(encoded[index])
            pending.append(await self._send(batch, counts))
        sent = [p for p in pending if p is not None]
        handed = sum(c.rows for _, c in sent)
        # Delivery is awaited in the background, a few batches at a time, so
        # that the next batch is encoded while Kafka acknowledges this one
        # (waiting here capped the log at one batch per broker round trip).
        await self._in_flight.acquire()
        task = asyncio.create_task(self._settle(sent))
        self._settling.add(task)
        task.add_done_callback(self._settled)
        return handed

    def _settled(self, task: asyncio.Task[_Counts]) -> None:
        self._settling.discard(task)
        self._in_flight.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("counting prediction-log deliveries failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait until every batch handed to the producer is acknowledged or counted as failed."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)

    async def _send(
        self, batch: RecordBatch, counts: _Counts
    ) -> tuple[asyncio.Future[object], _Counts] | None:
        try:
            future = await self._producer.send_batch(
                batch.builder, PREDICTIONS.name, partition=batch.partition
            )
        except KafkaError as exc:
            self._buffer.drop("kafka_error", counts.rows)
            log.warning("%d prediction rows not logged: %s", counts.rows, exc)
            return None
        return future, counts

    async def _settle(self, sent: list[tuple[asyncio.Future[object], _Counts]]) -> _Counts:
        """Count what was handed over, wait for delivery and count what failed."""
        total = _Counts()
        for _, counts in sent:
            total.merge(counts)
        written = self._metrics.log_written
        if total.answered:
            written.labels(kind="answered").inc(total.answered)
        if total.shadow:
            written.labels(kind="shadow").inc(total.shadow)
        if total.records:
            self._metrics.base.messages_out.labels(topic=PREDICTIONS.name).inc(total.records)
        if sent:
            results = await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
            failed = sum(
                c.rows
                for r, (_, c) in zip(results, sent, strict=True)
                if isinstance(r, BaseException)
            )
            if failed:
                self._buffer.drop("kafka_error", failed)
                log.warning("%d prediction rows failed delivery to Kafka", failed)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop`` is set, then flush what is buffered."""
        while not stop.is_set():
            await self.write_once()
        while len(self._buffer):
            await self.write_once(timeout_s=0)
        await self.drain()


_RECORD_OVERHEAD = 4096
"""Bytes of a Kafka record besides its value kept free under ``max.message.bytes``."""


@dataclass(slots=True)
class _Counts:
    """What one producer batch holds: answered and shadow rows, and records."""

    answered: int = 0
    shadow: int = 0
    records: int = 0

    @property
    def rows(self) -> int:
        return self.answered + self.shadow

    def add(self, record: EncodedPrediction) -> None:
        if record.shadow:
            self.shadow += record.rows
        else:
            self.answered += record.rows
        self.records += 1

    def merge(self, other: _Counts) -> None:
        self.answered += other.answered
        self.shadow += other.shadow
        self.records += other.records
