"""Consume ``driftline.events`` / ``driftline.labels``; write outcomes in Kafka transactions.

Each batch's outcomes and its consumer offsets commit in one transaction, so
after a crash a batch is either fully visible downstream or replayed — never half
written, never lost.  Replays are not mistaken for duplicates: dedup claims are
owned by the record's ``topic:partition:offset``.

Failures are sorted with :func:`~driftline.kafkaio.is_record_fault`:

* the world's (broker or Redis unreachable): the same records are retried with a
  back-off, and each failed attempt is reported to :class:`ConsumerHealth`, which
  raises a stall after ``kafka.stall_after_s``;
* a record's (the producer refuses its size, processing it raises): the records
  are split in halves, each written and committed in its own transaction, until
  the record at fault is alone; it is then dead-lettered (``too_large`` or
  ``processing_error``) in a transaction of its own, and the partition moves on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    ProducerFenced,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from opentelemetry import context as otel_context

from driftline.contracts.errors import UnavailableError
from driftline.contracts.messages import DlqReason
from driftline.contracts.topics import EVENTS, LABELS
from driftline.ingestion.core import Incoming, IngestionCore, Outcome, Rejected, Source
from driftline.ingestion.writer import OutcomeCounters, fault_letter, send_outcomes
from driftline.kafkaio import (
    context_from_headers,
    is_record_fault,
    make_consumer,
    make_producer,
    retry_io,
    traceparent_of,
)
from driftline.security.kafka_auth import kafka_auth
from driftline.settings import PlatformSettings
from driftline.telemetry import ConsumerHealth, ServiceMetrics

log = logging.getLogger(__name__)

SKIP_REASONS: dict[str, tuple[str, ...]] = {
    topic.name: (
        "undecodable",
        "unwritable",
        DlqReason.TOO_LARGE.value,
        DlqReason.PROCESSING_ERROR.value,
    )
    for topic in (EVENTS, LABELS)
}
"""Every reason this loop can skip a record of each topic for, created at 0 on
``driftline_records_skipped_total`` at start (see :meth:`ConsumerHealth.expect`)."""

_GROUP_LOST = (
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)


def to_incoming(record: Any) -> Incoming:
    """An aiokafka ConsumerRecord as the core's input."""
    kind: Literal["event", "label"] = "event" if record.topic == EVENTS.name else "label"
    return Incoming(
        value=record.value,
        key=record.key,
        source=Source(
            kind=kind,
            via="kafka",
            owner=f"{record.topic}:{record.partition}:{record.offset}",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        ),
    )


def _where(record: Any) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


def _span(records: Sequence[Any]) -> str:
    """``topic[p]@first..last`` per partition, for log lines."""
    first: dict[tuple[str, int], tuple[int, int]] = {}
    for r in records:
        lo, _ = first.get((r.topic, r.partition), (r.offset, r.offset))
        first[(r.topic, r.partition)] = (lo, r.offset)
    return ", ".join(f"{t}[{p}]@{lo}..{hi}" for (t, p), (lo, hi) in first.items())


@dataclass(frozen=True)
class _Fault:
    """The records written raised an error of their own (``is_record_fault``)."""

    exc: Exception
    validating: bool
    """True when the core raised it (processing), False when writing did."""
    outcomes: list[Outcome] | None = None
    """What the core made of the records, when it got that far."""


_Result = Literal["done", "lost", "stopped"] | _Fault


class _FinishBeforeRevoking(ConsumerRebalanceListener):  # type: ignore[misc]
    """Holds a revocation until the batch being written is committed (or given up).

    aiokafka's transactional offsets carry no group generation (KIP-447's fence), so the
    broker would accept a batch's commit after its partitions moved to another replica —
    which, having read the older committed offsets, writes the same records again (seen:
    one event on ``driftline.events.valid`` twice, 45 ms apart, when a broker's death
    moved the group coordinator).  The group cannot finish a rebalance before this member
    rejoins, and it rejoins only after this callback: so the partitions move only once
    their batch is committed, and the next owner starts after it.
    """

    def __init__(self, writing: asyncio.Lock) -> None:
        self.writing = writing

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.writing:
            return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


class KafkaIngestLoop:
    """The Kafka transport of ingestion."""

    def __init__(
        self,
        core: IngestionCore,
        settings: PlatformSettings,
        metrics: ServiceMetrics,
        counters: OutcomeCounters,
        health: ConsumerHealth,
    ) -> None:
        self.core = core
        self.settings = settings
        self.metrics = metrics
        self.counters = counters
        self.health = health
        health.expect(SKIP_REASONS)
        self.batches = 0
        self._producer: AIOKafkaProducer | None = None
        self._kafka_security = kafka_auth(settings.security, "ingestion")
        self._writing = asyncio.Lock()
        """Held while a batch is written: a revocation waits for it."""
        self._committed_to: dict[TopicPartition, int] = {}
        """The next offset of each partition after the last batch this replica committed.

        The group's committed offset can lag it: aiokafka's ``OffsetFetch`` (v1-v3,
        before KIP-447's ``require_stable``) reads the offset of the last *completed*
        transaction, and a commit returns before its markers are written.
        """

    def _make_producer(self) -> AIOKafkaProducer:
        cfg = self.settings.ingestion
        return make_producer(
            self.settings.kafka,
            f"ingestion-{cfg.instance_id}",
            security=self._kafka_security,
            transactional_id=f"driftline-ingestion-{cfg.instance_id}",
            linger_ms=2,
            max_batch_size=256 * 1024,
        )

    async def _ready_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._make_producer()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _drop_producer(self) -> None:
        """Stop the producer after a failed transaction; the next attempt starts a new one.

        A fresh producer (same transactional id, a new epoch) is the one state
        known to be good whatever the failure left behind.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await producer.stop()
        except Exception as exc:  # it is being replaced; the new one fences it anyway
            log.warning("stopping the failed producer raised %s: %s", type(exc).__name__, exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Process until ``stop`` is set."""
        cfg = self.settings.ingestion
        consumer = make_consumer(
            self.settings.kafka,
            f"ingestion-{cfg.instance_id}",
            group_id=cfg.consumer_group,
            security=self._kafka_security,
            max_poll_records=cfg.batch_size,
        )
        consumer.subscribe(
            [EVENTS.name, LABELS.name], listener=_FinishBeforeRevoking(self._writing)
        )
        await consumer.start()
        try:
            # The producer is started by the first write, where a failure is retried.
            while not stop.is_set():
                undecodable: Exception | None = None
                try:
                    batch = await consumer.getmany(timeout_ms=200, max_records=cfg.batch_size)
                except Exception as exc:
                    if not is_record_fault(exc):
                        raise
                    undecodable, batch = exc, {}
                if undecodable is not None:
                    try:
                        await self._undecodable(consumer, undecodable, stop)
                    except KafkaError as exc:
                        # The broker failed while we looked; the next poll raises again and
                        # the search starts over.
                        log.warning("looking for an undecodable record failed: %s", exc)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 1.0)
                elif batch:
                    async with self._writing:
                        await self._handle(consumer, batch, stop)
        finally:
            await consumer.stop()
            if self._producer is not None:
                await self._producer.stop()

    async def _undecodable(
        self, consumer: AIOKafkaConsumer, exc: Exception, stop: asyncio.Event
    ) -> None:
        """Find and dead-letter the record the client cannot decode, then move past it.

        aiokafka raises while decoding a fetched record whose header name is not
        UTF-8 (or whose batch is corrupt), without saying where, and raises again at
        every poll: the partition would never move (and the service would exit).
        Reading each partition one record at a time finds it: the read that raises
        is at the culprit's offset.  The records before it are written as usual; the
        culprit gets a dead letter naming its offset (its bytes cannot be read here)
        and is skipped.  Records after it in the same producer batch cannot be
        decoded either, and follow it.
        """
        batch_size = self.settings.ingestion.batch_size
        # The poll that raised had already moved other partitions past records it then
        # dropped with the exception: every partition is read again from its committed
        # offset (all that was handled is committed before the next poll).
        for tp in consumer.assignment():
            # Where this replica's own last commit left it, unless the group's offset
            # is further (another member committed since): read back right after our
            # commit, the group's can still be the one before it, and seeking there
            # would write that batch twice.
            known = [o for o in (await consumer.committed(tp), self._committed_to.get(tp)) if o]
            if not known:
                await consumer.seek_to_beginning(tp)  # as auto_offset_reset=earliest does
            else:
                consumer.seek(tp, max(known))
        for tp in sorted(consumer.assignment()):
            start = await consumer.position(tp)
            end = consumer.highwater(tp)
            if end is not None and start >= end:
                continue  # nothing to read there
            good: list[Any] = []
            found: Exception | None = None
            while len(good) < batch_size:
                try:
                    # The failed fetch is dropped: waiting for it again takes a round trip.
                    got = await consumer.getmany(tp, timeout_ms=2000, max_records=1)
                except Exception as again:
                    if not is_record_fault(again):
                        raise
                    found = again
                    break
                if not got.get(tp):
                    break
                good += got[tp]
                if end is not None and good[-1].offset + 1 >= end:
                    break
            if found is None:
                if good:
                    consumer.seek(tp, start)  # not this partition: read again as usual
                continue
            offset = await consumer.position(tp)
            if not good or await self._handle(consumer, {tp: good}, stop):
                await self._skip_undecodable(consumer, tp, offset, found, stop)
            return
        log.warning("a fetched record could not be decoded (%s), but none fails again", exc)

    async def _skip_undecodable(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        offset: int,
        exc: Exception,
        stop: asyncio.Event,
    ) -> None:
        record = ConsumerRecord(tp.topic, tp.partition, offset, -1, 0, None, None, None, -1, -1, ())
        where = _where(record)
        detail = (
            f"the Kafka client cannot decode the record ({type(exc).__name__}: {exc}), e.g. a "
            f"header name that is not UTF-8; it stays on {tp.topic} at offset {offset} for the "
            "topic's retention"
        )
        # No traceback: the error is known (aiokafka's decoding), the message says it all.
        log.error("the record at %s cannot be decoded: %s", where, detail)
        self.health.skip(tp.topic, tp.partition, offset, "undecodable", detail)
        letter = self.core.unreadable(to_incoming(record).source, detail)
        result = await self._write([record], stop, outcomes=[letter])
        if isinstance(result, _Fault):  # should not happen: the letter is a few hundred bytes
            log.error("the dead letter of %s cannot be written either: %s", where, result.exc)
            result = await self._write([record], stop, outcomes=[])
        if result == "done":
            consumer.seek(tp, offset + 1)

    async def _handle(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[Any]],
        stop: asyncio.Event,
    ) -> bool:
        """Write one batch: whole when it can be, split around the records at fault.

        False when it was left unfinished (the partitions were taken away, or the
        service is stopping).
        """
        # Grouped by partition and in offset order: any contiguous slice written
        # and committed before the next one commits each partition's offsets in order.
        todo: list[list[Any]] = [[r for recs in batch.values() for r in recs]]
        while todo:
            chunk = todo.pop()
            result = await self._write(chunk, stop)
            if isinstance(result, _Fault):
                if len(chunk) > 1:
                    mid = len(chunk) // 2
                    log.info(
                        "writing %s failed because of a record (%s: %s); splitting it",
                        _span(chunk),
                        type(result.exc).__name__,
                        result.exc,
                    )
                    todo += [chunk[mid:], chunk[:mid]]  # the first half is popped first
                    continue
                result = await self._isolate(chunk[0], result, stop)
            if result == "lost":
                self._rewind(consumer, [chunk, *todo])
                return False
            if result == "stopped":
                return False  # not committed: the next start replays it
        self.batches += 1
        return True

    @staticmethod
    def _rewind(consumer: AIOKafkaConsumer, left: list[list[Any]]) -> None:
        # The partitions moved to another replica, which replays them from the
        # committed offsets; any still ours are read again from the first record
        # not committed.
        first: dict[TopicPartition, int] = {}
        for chunk in left:
            for r in chunk:
                tp = TopicPartition(r.topic, r.partition)
                first[tp] = min(first.get(tp, r.offset), r.offset)
        for tp, offset in first.items():
            if tp in consumer.assignment():
                consumer.seek(tp, offset)

    async def _isolate(self, record: Any, fault: _Fault, stop: asyncio.Event) -> _Result:
        """Dead-letter the one record at fault in its own transaction; else move past it."""
        exc = fault.exc
        item = to_incoming(record)
        letter = fault_letter(self.core, item, exc, processing=fault.validating)
        reason, detail = letter.reason, letter.letter.detail
        log.error(
            "the %s at %s cannot be written (%s); it is dead-lettered as %s",
            item.source.kind,
            _where(record),
            detail,
            reason.value,
            exc_info=exc,
        )
        self.health.skip(record.topic, record.partition, record.offset, reason.value, detail)
        result = await self._write([record], stop, outcomes=[letter])
        if not isinstance(result, _Fault):
            if result == "done" and fault.outcomes:
                await self._release(item, fault.outcomes[0])
            return result
        # Should not happen (a dead letter always fits); the partition must move on
        # all the same, and the record stays readable at its source offset.
        log.error(
            "the dead letter of the %s at %s cannot be written either (%s: %s); committing "
            "past it: the record stays on %s at offset %d for the topic's retention",
            item.source.kind,
            _where(record),
            type(result.exc).__name__,
            result.exc,
            record.topic,
            record.offset,
            exc_info=result.exc,
        )
        self.health.skip(
            record.topic, record.partition, record.offset, "unwritable", str(result.exc)
        )
        moved = await self._write([record], stop, outcomes=[])
        # Committing offsets alone cannot fail because of a record: _write retried any
        # failure as the world's, so this is never a fault.
        return "stopped" if isinstance(moved, _Fault) else moved

    async def _release(self, item: Incoming, outcome: Outcome) -> None:
        # A record accepted, then dead-lettered because its write failed, gives up
        # its dedup claim: replayed from the DLQ it is not taken for a duplicate.
        try:
            await self.core.release([item], [outcome])
        except UnavailableError as exc:
            log.warning(
                "could not release the dedup claim of %s (%s); a replay within "
                "dedup_window_s is dead-lettered as a duplicate",
                item.source.where(),
                exc,
            )

    async def _write(
        self, chunk: list[Any], stop: asyncio.Event, *, outcomes: list[Outcome] | None = None
    ) -> _Result:
        """Process ``chunk`` (unless ``outcomes`` are given) and commit it in one transaction.

        Retries while the world is at fault (:func:`retry_io`: a jittered exponential
        back-off from 0.2 s up to 5 s, cut short by ``stop``); returns the fault when
        the records are.
        """
        items = [to_incoming(r) for r in chunk]
        offsets = {TopicPartition(r.topic, r.partition): r.offset + 1 for r in chunk}
        positions: dict[tuple[str, int], int] = {}
        for r in chunk:
            positions.setdefault((r.topic, r.partition), r.offset)
        group = self.settings.ingestion.consumer_group

        async def attempt() -> _Result:
            validating = True
            try:
                outs = outcomes if outcomes is not None else await self.core.process(items)
                validating = False
                contexts = self._contexts(chunk) if outcomes is None else [None] * len(outs)
                producer = await self._ready_producer()
                async with producer.transaction():
                    # Records that came without a trace context may start one (head
                    # sampling); a dead letter written for a fault is not one of them.
                    futures = await send_outcomes(
                        producer, outs, contexts, head_sample=outcomes is None
                    )
                    # A delivery that fails does not fail the transaction by itself:
                    # wait for each, so the commit covers only what was written.
                    await asyncio.gather(*futures)
                    await producer.send_offsets_to_transaction(offsets, group)
                for tp, offset in offsets.items():
                    self._committed_to[tp] = max(offset, self._committed_to.get(tp, 0))
            except _GROUP_LOST as exc:
                log.warning("batch dropped after a rebalance: %s", exc)
                self.metrics.errors.labels(kind="rebalance").inc()
                return "lost"
            except ProducerFenced:
                log.error("producer fenced by another instance with the same instance_id")
                raise
            except Exception as exc:
                if not validating:
                    await self._drop_producer()
                if is_record_fault(exc) and outcomes != []:
                    return _Fault(exc, validating, None if validating else outs)
                raise  # the world's fault (or offsets alone failing): retried
            self.health.progressed(positions)
            self._account(chunk, items, outs, from_core=outcomes is None)
            return "done"

        def report(exc: Exception, delay: float) -> None:
            self.metrics.errors.labels(kind=type(exc).__name__).inc()
            self.health.failed(positions, exc)
            log.warning(
                "writing %d record(s) (%s) failed (%s: %s); retrying in %.1fs",
                len(chunk),
                _span(chunk),
                type(exc).__name__,
                exc,
                delay,
            )

        try:
            return await retry_io(
                attempt,
                first_s=0.2,
                max_s=5.0,
                on_retry=report,
                retryable=lambda exc: not isinstance(exc, ProducerFenced),
                stop=stop,
            )
        except ProducerFenced:
            raise
        except Exception:
            # Every other failure is retried: one escapes only when ``stop`` ended the wait.
            if not stop.is_set():
                raise
            return "stopped"

    @staticmethod
    def _contexts(chunk: list[Any]) -> list[otel_context.Context | None]:
        return [
            context_from_headers(r.headers) if traceparent_of(r.headers) else None for r in chunk
        ]

    def _account(
        self, chunk: list[Any], items: list[Incoming], outs: list[Outcome], *, from_core: bool
    ) -> None:
        for topic, count in collections.Counter(r.topic for r in chunk).items():
            self.metrics.messages_in.labels(topic=topic).inc(count)
        if len(outs) != len(items):
            return  # committed past without an outcome (already counted as skipped)
        self.counters.count(outs, [i.source.kind for i in items], "kafka")
        if not from_core:
            return  # a record isolated by _isolate, which counted it
        for item, outcome in zip(items, outs, strict=True):
            if isinstance(outcome, Rejected) and outcome.reason is DlqReason.PROCESSING_ERROR:
                # Not an ordinary bad record: the RecordsSkipped alert is to hear of it.
                src = item.source
                self.health.skip(
                    src.topic or "",
                    src.partition,
                    src.offset,
                    outcome.reason.value,
                    outcome.letter.detail,
                )
