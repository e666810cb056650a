"""The ``driftline.models`` log: writing events and following them into the core.

The follower never stops on one record: a record that does not parse, an event
no registry could have written (a model or version the log never registered),
and an event whose application raises are each skipped with a log line and
counted in ``driftline_records_skipped_total{topic="driftline.models", reason}``;
the replay goes on and the registry keeps answering.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry import trace
from pydantic import ValidationError

from driftline.contracts.messages import RegistryEvent
from driftline.contracts.topics import MODELS
from driftline.kafkaio import (
    make_consumer,
    make_producer,
    read_from_start,
    send_model,
    unreadable_detail,
)
from driftline.registry.core import RegistryCore
from driftline.registry.registry_metrics import RegistryMetrics
from driftline.security.kafka_auth import KafkaAuth
from driftline.settings import KafkaSettings
from driftline.telemetry import ConsumerHealth, messaging_attributes
from driftline.telemetry.loop import model_event_attributes

__all__ = ["KafkaRegistryLog"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer("driftline.registry")

SKIP_REASONS: dict[str, tuple[str, ...]] = {
    MODELS.name: ("unreadable", "processing_error", "unknown_model", "unknown_version", "invalid")
}
"""Every reason the follower can skip a record of the log for, created at 0 on
``driftline_records_skipped_total`` at start (see :meth:`ConsumerHealth.expect`)."""


class KafkaRegistryLog:
    """Writes registry events (``acks=all``, idempotent) and follows the topic from offset 0.

    The follower reads without a consumer group: every replica reads the whole
    log and builds the whole state.  :attr:`caught_up` is set once the end of
    the log as of start-up has been applied.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        metrics: RegistryMetrics,
        health: ConsumerHealth,
        *,
        instance_id: str = "0",
        security: KafkaAuth | None = None,
    ) -> None:
        self._kafka = kafka
        self._security = security
        self._metrics = metrics
        self._health = health
        health.expect(SKIP_REASONS)
        self._instance = instance_id
        self._producer: AIOKafkaProducer | None = None
        self.caught_up = asyncio.Event()

    async def start(self) -> None:
        """Start the producer."""
        self._producer = make_producer(
            self._kafka, f"registry-{self._instance}", security=self._security
        )
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and stop the producer."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, event: RegistryEvent) -> None:
        """Write ``event`` keyed by model name; returns once every in-sync replica has it."""
        if self._producer is None:
            raise RuntimeError("KafkaRegistryLog.publish before start()")
        # A child of the RPC's span (the caller's trace, e.g. the retraining loop's):
        # serving's swap continues it from the record's traceparent.
        with tracer.start_as_current_span(
            f"{MODELS.name} publish",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                **messaging_attributes(MODELS.name, "publish", key=event.model_name),
                **model_event_attributes(event),
            },
        ):
            delivery = await send_model(self._producer, MODELS, event.model_name, event)
            await delivery
        self._metrics.base.messages_out.labels(topic=MODELS.name).inc()

    async def follow(self, core: RegistryCore, stop: asyncio.Event) -> None:
        """Replay the log into ``core`` from the beginning, then keep applying new events."""
        consumer = make_consumer(
            self._kafka,
            f"registry-{self._instance}-follower",
            group_id=None,
            security=self._security,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            # One partition by contract (one global order); read them all regardless.
            end = await read_from_start(consumer, MODELS)
            log.info(
                "replaying %s up to %s", MODELS.name, {tp.partition: o for tp, o in end.items()}
            )
            while not stop.is_set():
                if not self.caught_up.is_set() and await self._at(consumer, end):
                    core.caught_up = True
                    self.caught_up.set()
                    log.info("registry state rebuilt: %d version(s)", core.state.version_count)
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                for tp, records in batches.items():
                    for record in records:
                        self.apply_record(core, record.value, tp.partition, record.offset)
        finally:
            await consumer.stop()

    @staticmethod
    async def _at(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
        for tp, offset in end.items():
            if await consumer.position(tp) < offset:
                return False
        return True

    def apply_record(
        self, core: RegistryCore, value: bytes | None, partition: int, offset: int
    ) -> None:
        """Apply one record of the log; whatever is wrong with it, the follower goes on."""
        self._metrics.base.messages_in.labels(topic=MODELS.name).inc()
        try:
            event = RegistryEvent.model_validate_json(value or b"")
        except ValidationError as exc:
            # The log is the audit trail: a bad record is counted and skipped, never fatal.
            self._metrics.events.labels(outcome="invalid").inc()
            self._metrics.base.errors.labels(kind="invalid_registry_event").inc()
            detail = unreadable_detail(value, exc)
            self._health.skip(MODELS.name, partition, offset, "unreadable", detail)
            return
        try:
            outcome = core.on_event(event)
        except Exception as exc:
            # A bug the event exercises (or content the state cannot hold) must not stop
            # the replay: every later event would be lost to this replica.
            self._metrics.events.labels(outcome="invalid").inc()
            self._health.skip(
                MODELS.name,
                partition,
                offset,
                "processing_error",
                f"{type(exc).__name__}: {exc}",
                event_id=event.event_id,
                error=exc,  # its traceback is logged: the line the event made fail
            )
            return
        if outcome.skip_reason is not None:
            self._health.skip(
                MODELS.name,
                partition,
                offset,
                outcome.skip_reason,
                f"{event.kind.value} of {event.model_name[:200]!r} v{event.version}: "
                f"{outcome.reason}",
                event_id=event.event_id,
            )
        elif not outcome.applied:
            log.info("event %s (%s) ignored: %s", event.event_id, event.kind, outcome.reason)
        self._metrics.observe(event, outcome, core.state)
