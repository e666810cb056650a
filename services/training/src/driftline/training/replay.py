"""Replay of recent data from the feature log and the label topic, for retraining.

A consumer outside any group is assigned every partition of
``driftline.features`` and ``driftline.labels.valid``, seeks where the
:class:`ReplayPlan` says (explicit offsets, ``offsets_for_times`` of the
request's event time, or a tail), reads up to the end offsets taken at the
start, and joins the two by event id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from driftline.contracts.messages import FeatureVector, ValidLabel
from driftline.contracts.topics import FEATURES, LABELS_VALID
from driftline.kafkaio import make_consumer
from driftline.security.kafka_auth import KafkaAuth
from driftline.settings import KafkaSettings
from driftline.training.label_join import JoinedExample, LabelJoin, Position
from driftline.training.learner import Prediction
from driftline.training.retrain import ReplayPlan

log = logging.getLogger(__name__)

_FOREVER_S = 10.0 * 365 * 86400


def _no_prediction(_: FeatureVector) -> Prediction:
    return Prediction()


ReplayProgress = Callable[[int, int], None]
"""Called as records are read: ``(offsets passed, offsets in the range)`` over every
partition of both topics (about a record each; transaction markers take one too)."""


class KafkaReplay:
    """Callable ``await replay(plan)`` → the joined examples of the replayed range.

    ``progress`` (optional) is called after every fetched batch with the offsets passed
    so far and the offsets the range holds (both topics, every partition); the last call
    has them equal.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        name: str = "training-replay",
        progress: ReplayProgress | None = None,
        *,
        security: KafkaAuth | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.bad_records = 0
        self.progress = progress
        self.security = security

    async def __call__(self, plan: ReplayPlan) -> list[JoinedExample[Any]]:
        consumer = make_consumer(
            self.settings, self.name, group_id=None, security=self.security, max_poll_records=5000
        )
        try:
            await consumer.start()
            return await self._read(consumer, plan)
        finally:
            await consumer.stop()  # also when start() failed: it holds a client to close

    async def _read(self, consumer: AIOKafkaConsumer, plan: ReplayPlan) -> list[JoinedExample[Any]]:
        # A consumer outside a group holds no topic metadata; the partitions are
        # the declared ones (provisioning creates the topics from the same declarations).
        tps = [
            TopicPartition(t.name, p) for t in (FEATURES, LABELS_VALID) for p in range(t.partitions)
        ]
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        start = dict(begin)
        if plan.since_event_time is not None:
            ms = int(plan.since_event_time.timestamp() * 1000)
            found = await consumer.offsets_for_times(dict.fromkeys(tps, ms))
            for tp in tps:
                hit = found.get(tp)
                start[tp] = hit.offset if hit is not None else end[tp]
        elif plan.tail_records is not None:
            for tp in tps:
                start[tp] = max(begin[tp], end[tp] - plan.tail_records)
        for (topic, partition), offset in plan.since_offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in start:
                start[tp] = max(begin[tp], min(offset, end[tp]))
        remaining = {tp for tp in tps if start[tp] < end[tp]}
        for tp in tps:
            consumer.seek(tp, start[tp])
        join: LabelJoin[Prediction] = LabelJoin(
            allowed_lateness_s=_FOREVER_S, orphan_retention_s=_FOREVER_S, expired_capacity=0
        )
        out: list[JoinedExample[Any]] = []
        total = sum(max(0, end[tp] - start[tp]) for tp in tps)
        # Progress is counted in offsets passed, not records seen: a transactional
        # producer's commit markers (and aborted records) take offsets no record is
        # read at, so a count of records never reached the total.
        passed = dict.fromkeys(tps, 0)
        if self.progress is not None:
            self.progress(0, total)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= end[tp]:
                        break
                    passed[tp] = r.offset + 1 - start[tp]
                    joined = self._one(join, r)
                    if joined is not None:
                        out.append(joined)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
                    passed[tp] = end[tp] - start[tp]
            if self.progress is not None and (batch or not remaining):
                self.progress(sum(passed.values()), total)
        log.info(
            "replayed %d joined examples (%d vectors, %d labels, %d bad records)",
            len(out), join.stats.vectors, join.stats.labels, self.bad_records,
        )  # fmt: skip
        return out

    def _one(self, join: LabelJoin[Prediction], record: Any) -> JoinedExample[Prediction] | None:
        pos = Position(record.topic, record.partition, record.offset)
        try:
            if record.topic == FEATURES.name:
                vector = FeatureVector.model_validate_json(record.value or b"")
                return join.add_vector(vector, pos, _no_prediction)
            return join.add_label(ValidLabel.model_validate_json(record.value or b""), pos)
        except ValidationError:
            # The online loop skipped (and counted) it when it read it.
            self.bad_records += 1
            return None
        except Exception:
            # Isolates the record: the replay (and the retrain) goes on without it.
            self.bad_records += 1
            log.error("replay: skipping the record at %s[%d]@%d", pos.topic, pos.partition,
                      pos.offset, exc_info=True)  # fmt: skip
            return None
