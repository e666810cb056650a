"""The Kafka transport of training: the feature log and labels in, retrain requests in.

Offsets are committed only after a candidate has been registered, and never
past a record the join still holds (an unlabeled vector, an orphan label), so a
restart replays what the last registered version had not covered: at-least-once,
with duplicates recognised by event id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from driftline.contracts.errors import DriftlineError
from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel
from driftline.contracts.topics import FEATURES, LABELS_VALID, RETRAIN
from driftline.kafkaio import make_consumer
from driftline.settings import PlatformSettings
from driftline.telemetry import ServiceMetrics
from driftline.training.core import ReplayFn, TrainingCore
from driftline.training.label_join import Position

log = logging.getLogger(__name__)


class KafkaTrainingLoop:
    """Feeds every core from ``driftline.features`` and ``driftline.labels.valid``."""

    def __init__(
        self, cores: Sequence[TrainingCore], settings: PlatformSettings, metrics: ServiceMetrics
    ) -> None:
        self.cores = cores
        self.settings = settings
        self.metrics = metrics
        self.assigned = asyncio.Event()
        """Set once the group has assigned this replica its partitions."""

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set."""
        cfg = self.settings.training
        # Range assignment keeps partition p of both topics (same key, same count)
        # on the same replica, so a vector and its label meet in one join.
        consumer = make_consumer(
            self.settings.kafka,
            f"training-{cfg.instance_id}",
            FEATURES,
            LABELS_VALID,
            group_id=cfg.consumer_group,
            max_poll_records=cfg.batch_size,
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=cfg.batch_size)
                if consumer.assignment():
                    self.assigned.set()
                for tp, records in batch.items():
                    self.metrics.messages_in.labels(topic=tp.topic).inc(len(records))
                    for r in records:
                        self._feed(r)
                await self._snapshots(consumer, batch)
        finally:
            await consumer.stop()

    def _feed(self, record: Any) -> None:
        pos = Position(record.topic, record.partition, record.offset)
        try:
            if record.topic == FEATURES.name:
                vector = FeatureVector.model_validate_json(record.value)
                for core in self.cores:
                    core.on_vector(vector, pos)
            else:
                label = ValidLabel.model_validate_json(record.value)
                for core in self.cores:
                    core.on_label(label, pos)
        except ValidationError as exc:
            # Written by Driftline itself, so this is a bug upstream: count and go on.
            self.metrics.errors.labels(kind="bad_record").inc()
            log.warning("skipping an unreadable record at %s: %s", pos, exc.errors()[:1])

    async def _snapshots(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]]
    ) -> None:
        registered = False
        for core in self.cores:
            if not core.snapshot_due:
                continue
            try:
                await core.snapshot()
                registered = True
            except DriftlineError as exc:
                # The registry is down or refused: keep learning, try at the next batch.
                self.metrics.errors.labels(kind=f"snapshot_{type(exc).__name__}").inc()
                log.warning("snapshot of %s failed: %s", core.spec.name, exc.message)
        if registered:
            await self._commit(consumer)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        offsets: dict[TopicPartition, int] = {}
        for tp in consumer.assignment():
            offsets[tp] = await consumer.position(tp)
        for core in self.cores:
            for (topic, partition), held in core.join.oldest_unfinished().items():
                tp = TopicPartition(topic, partition)
                if tp in offsets:
                    offsets[tp] = min(offsets[tp], held)
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            self.metrics.errors.labels(kind="commit").inc()
            log.warning("offset commit failed (records will be replayed): %s", exc)


class KafkaRetrainLoop:
    """Handles ``driftline.retrain`` requests one at a time, committing each when done."""

    def __init__(
        self,
        cores: Sequence[TrainingCore],
        settings: PlatformSettings,
        metrics: ServiceMetrics,
        replay: ReplayFn,
    ) -> None:
        self.cores = cores
        self.settings = settings
        self.metrics = metrics
        self.replay = replay

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set."""
        cfg = self.settings.training
        consumer = make_consumer(
            self.settings.kafka,
            f"training-retrain-{cfg.instance_id}",
            RETRAIN,
            group_id=f"{cfg.consumer_group}-retrain",
            max_poll_records=1,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=1)
                for tp, records in batch.items():
                    for r in records:
                        self.metrics.messages_in.labels(topic=tp.topic).inc()
                        await self._handle(r, stop)
                        await consumer.commit({tp: r.offset + 1})
        finally:
            await consumer.stop()

    async def _handle(self, record: Any, stop: asyncio.Event) -> None:
        try:
            request = RetrainRequest.model_validate_json(record.value)
        except ValidationError as exc:
            self.metrics.errors.labels(kind="bad_retrain_request").inc()
            log.warning("skipping an unreadable retrain request at offset %d: %s",
                        record.offset, exc.errors()[:1])  # fmt: skip
            return
        delay = 0.5
        while True:
            try:
                for core in self.cores:
                    outcome = await core.retrain(request, self.replay)
                    if outcome is not None:
                        log.info(
                            "retrain %s → %s v%d (%s)",
                            request.request_id,
                            core.spec.name,
                            outcome.version.version,
                            outcome.alias,
                        )
                return
            except DriftlineError as exc:
                self.metrics.errors.labels(kind=f"retrain_{type(exc).__name__}").inc()
                if not exc.retriable or stop.is_set():
                    log.error("retrain %s failed: %s", request.request_id, exc.message)
                    if exc.retriable:
                        raise  # not committed: the next start retries it
                    return
                log.warning("retrain %s: %s; retrying in %.1fs", request.request_id,
                            exc.message, delay)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except KafkaError as exc:
                self.metrics.errors.labels(kind="retrain_replay").inc()
                log.warning("retrain %s: replay failed (%s); retrying", request.request_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
