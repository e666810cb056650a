"""Consume ``driftline.events`` / ``driftline.labels``; write outcomes in Kafka transactions.

Each batch's outcomes and its consumer offsets commit in one transaction, so
after a crash a batch is either fully visible downstream or replayed — never half
written, never lost.  Replays are not mistaken for duplicates: dedup claims are
owned by the record's ``topic:partition:offset``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
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
from driftline.contracts.topics import EVENTS, LABELS
from driftline.ingestion.core import Incoming, IngestionCore, Source
from driftline.ingestion.writer import OutcomeCounters, send_outcomes
from driftline.kafkaio import context_from_headers, make_consumer, make_producer, traceparent_of
from driftline.settings import PlatformSettings
from driftline.telemetry import ServiceMetrics

log = logging.getLogger(__name__)

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


class KafkaIngestLoop:
    """The Kafka transport of ingestion."""

    def __init__(
        self,
        core: IngestionCore,
        settings: PlatformSettings,
        metrics: ServiceMetrics,
        counters: OutcomeCounters,
    ) -> None:
        self.core = core
        self.settings = settings
        self.metrics = metrics
        self.counters = counters
        self.batches = 0

    def _producer(self) -> AIOKafkaProducer:
        cfg = self.settings.ingestion
        return make_producer(
            self.settings.kafka,
            f"ingestion-{cfg.instance_id}",
            transactional_id=f"driftline-ingestion-{cfg.instance_id}",
            linger_ms=2,
            max_batch_size=256 * 1024,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Process until ``stop`` is set."""
        cfg = self.settings.ingestion
        consumer = make_consumer(
            self.settings.kafka,
            f"ingestion-{cfg.instance_id}",
            EVENTS,
            LABELS,
            group_id=cfg.consumer_group,
            max_poll_records=cfg.batch_size,
        )
        producer = self._producer()
        await consumer.start()
        await producer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=cfg.batch_size)
                if not batch:
                    continue
                producer = await self._handle(consumer, producer, batch, stop)
        finally:
            await consumer.stop()
            await producer.stop()

    async def _handle(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        batch: dict[TopicPartition, list[Any]],
        stop: asyncio.Event,
    ) -> AIOKafkaProducer:
        records = [r for recs in batch.values() for r in recs]
        items = [to_incoming(r) for r in records]
        contexts: list[otel_context.Context | None] = [
            context_from_headers(r.headers) if traceparent_of(r.headers) else None for r in records
        ]
        offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items()}
        delay = 0.2
        while True:
            try:
                outcomes = await self.core.process(items)
                async with producer.transaction():
                    await send_outcomes(producer, outcomes, contexts)
                    await producer.send_offsets_to_transaction(
                        offsets, self.settings.ingestion.consumer_group
                    )
            except _GROUP_LOST as exc:
                # The partitions moved to another replica, which replays them from
                # the committed offsets; this batch is simply not ours any more.
                log.warning("batch dropped after a rebalance: %s", exc)
                self.metrics.errors.labels(kind="rebalance").inc()
                for tp in batch:
                    if tp in consumer.assignment():
                        consumer.seek(tp, batch[tp][0].offset)
                return producer
            except ProducerFenced:
                log.error("producer fenced by another instance with the same instance_id")
                raise
            except (KafkaError, UnavailableError) as exc:
                self.metrics.errors.labels(kind=type(exc).__name__).inc()
                log.warning("batch of %d failed (%s); retrying in %.1fs", len(items), exc, delay)
                if stop.is_set():
                    # Not committed: the next start replays it.
                    return producer
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                if isinstance(exc, KafkaError):
                    await producer.stop()
                    producer = self._producer()
                    await producer.start()
                continue
            self.counters.count(outcomes, [i.source.kind for i in items], "kafka")
            for tp, recs in batch.items():
                self.metrics.messages_in.labels(topic=tp.topic).inc(len(recs))
            self.batches += 1
            return producer
