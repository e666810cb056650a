"""Serving's two Kafka loops: following ``driftline.models`` and writing ``driftline.predictions``.

Every replica follows the whole models log itself (no consumer group: each
replica must see every promotion), starting from the log's end after loading
the registry's current aliases, so a restart does not replay history.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from driftline.contracts.errors import DriftlineError
from driftline.contracts.messages import RegistryEvent
from driftline.contracts.topics import MODELS, PREDICTIONS
from driftline.kafkaio import headers_from_context, send_model
from driftline.serving.model_table import ModelTable
from driftline.serving.prediction_log import PredictionLog, records_of
from driftline.serving.serving_metrics import ServingMetrics

__all__ = ["ModelFollower", "PredictionLogWriter"]

log = logging.getLogger(__name__)


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
        *,
        retry_s: float,
    ) -> None:
        self._consumer = consumer
        self._table = table
        self._metrics = metrics
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

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until ``stop`` is set."""
        await self._pin_end()
        await self._sync(stop)
        while not stop.is_set():
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self._metrics.base.messages_in.labels(topic=MODELS.name).inc()
                    try:
                        event = RegistryEvent.model_validate_json(record.value or b"")
                    except ValidationError as exc:
                        # A malformed record must not stop promotions from being followed.
                        self._metrics.registry_events.labels(outcome="invalid").inc()
                        log.warning(
                            "skipping invalid driftline.models record at offset %d: %s",
                            record.offset,
                            exc.errors()[0]["msg"] if exc.errors() else exc,
                        )
                        continue
                    applied = await self._table.apply(event)
                    self._metrics.registry_events.labels(
                        outcome="applied" if applied else "ignored"
                    ).inc()


class PredictionLogWriter:
    """Drains the :class:`PredictionLog` into ``driftline.predictions`` in batches.

    Shadow models are scored here, off the response path. A failed send is
    counted as dropped (``kafka_error``) and logged; the writer carries on.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        buffer: PredictionLog,
        metrics: ServingMetrics,
        *,
        batch: int,
    ) -> None:
        self._producer = producer
        self._buffer = buffer
        self._metrics = metrics
        self._batch = batch

    async def write_once(self, timeout_s: float | None = 0.2) -> int:
        """Send up to one batch; returns the number of records handed to the producer."""
        items = await self._buffer.take(self._batch, timeout_s)
        self._metrics.log_buffered.set(len(self._buffer))
        if not items:
            return 0
        sent = 0
        written = self._metrics.log_written
        futures: list[asyncio.Future[object]] = []
        for item in items:
            records = records_of(item)
            headers = headers_from_context(item.trace) if item.trace is not None else None
            for record in records:
                try:
                    futures.append(
                        await send_model(
                            self._producer,
                            PREDICTIONS,
                            record.entity_id,
                            record,
                            extra_headers=headers,
                        )
                    )
                except KafkaError as exc:
                    self._buffer.drop("kafka_error", 1)
                    log.warning("prediction %s not logged: %s", record.request_id, exc)
                    continue
                sent += 1
                written.labels(kind="shadow" if record.shadow else "answered").inc()
        self._metrics.base.messages_out.labels(topic=PREDICTIONS.name).inc(sent)
        if futures:
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = sum(1 for r in results if isinstance(r, BaseException))
            if failed:
                self._buffer.drop("kafka_error", failed)
                log.warning("%d prediction records failed delivery to Kafka", failed)
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop`` is set, then flush what is buffered."""
        while not stop.is_set():
            await self.write_once()
        while len(self._buffer):
            await self.write_once(timeout_s=0)
