"""The Kafka transport of training: the feature log and labels in, retrain requests in.

Offsets are committed only after a candidate has been registered, and never
past a record the join still holds (an unlabeled vector, an orphan label), so a
restart replays what the last registered version had not covered: at-least-once,
with duplicates recognised by event id.

No record stops a loop: an unreadable record, one whose processing raises (for
one model: the others still get it), a label of the wrong type, an example a
model raises on, a retrain request that can never be served are each skipped
with a log line naming topic, partition and offset and counted in
``driftline_records_skipped_total{topic, reason}``.  Only errors of the world
(broker, registry) are retried, and a retrain request that keeps failing on them
is reported as a stall.

A retrain request for a model training cannot retrain (no spec of it here, or a
spec without a pipeline: an ONNX or Python model registered from elsewhere) is
not dropped: it is recorded on the model in the registry
(``RecordUnservedRetrain``, visible in ``driftline models``) and then committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from opentelemetry import trace
from prometheus_client import Counter
from pydantic import ValidationError

from driftline.contracts.errors import DriftlineError
from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel
from driftline.contracts.topics import FEATURES, LABELS_VALID, RETRAIN
from driftline.kafkaio import (
    Leadership,
    backoff,
    context_from_headers,
    delay_before,
    group_session,
    is_record_fault,
    make_consumer,
)
from driftline.security.kafka_auth import kafka_auth
from driftline.settings import PlatformSettings
from driftline.telemetry import ConsumerHealth, ServiceMetrics, messaging_attributes
from driftline.telemetry.loop import MODEL_NAME, RETRAIN_ID
from driftline.training.core import ReplayFn, RetrainStatus, SkipReason, TrainingCore
from driftline.training.label_join import Position

log = logging.getLogger(__name__)
tracer = trace.get_tracer("driftline.training")

STREAM_SKIP_REASONS: dict[str, tuple[str, ...]] = {
    topic.name: ("unreadable", "processing_error", *(r.value for r in SkipReason))
    for topic in (FEATURES, LABELS_VALID)
}
"""Every reason the training loop can skip a record of each topic for, created at 0 on
``driftline_records_skipped_total`` at start (see :meth:`ConsumerHealth.expect`)."""

RETRAIN_SKIP_REASONS: dict[str, tuple[str, ...]] = {
    RETRAIN.name: (
        "unreadable",
        "unknown_model",
        "unserved_unrecorded",
        "invalid_request",
        "processing_error",
    )
}
"""The same for the retrain loop."""


def _describe(exc: BaseException) -> str:
    message = exc.message if isinstance(exc, DriftlineError) else str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class KafkaTrainingLoop:
    """Feeds every core from ``driftline.features`` and ``driftline.labels.valid``.

    ``health`` is the service's one :class:`ConsumerHealth` (skipped records).
    """

    def __init__(
        self,
        cores: Sequence[TrainingCore],
        settings: PlatformSettings,
        metrics: ServiceMetrics,
        health: ConsumerHealth,
    ) -> None:
        self.cores = cores
        self.settings = settings
        self.metrics = metrics
        self.health = health
        health.expect(STREAM_SKIP_REASONS)
        self.assigned = asyncio.Event()
        """Set once the group has assigned this replica its partitions."""
        self.fits: dict[int, asyncio.Task[None]] = {}
        """Scheduled fits of batch models under way (by core index)."""
        self._fit_retry_at: dict[int, float] = {}
        self._fitted = False

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set."""
        try:
            await self._run(stop)
        finally:
            for task in self.fits.values():
                task.cancel()
            await asyncio.gather(*self.fits.values(), return_exceptions=True)

    async def _run(self, stop: asyncio.Event) -> None:
        cfg = self.settings.training
        for core in self.cores:
            await core.warm_up()  # a batch model scores arrivals with its champion
        # Range assignment keeps partition p of both topics (same key, same count)
        # on the same replica, so a vector and its label meet in one join.
        consumer = make_consumer(
            self.settings.kafka,
            f"training-{cfg.instance_id}",
            FEATURES,
            LABELS_VALID,
            group_id=cfg.consumer_group,
            security=kafka_auth(self.settings.security, "training"),
            max_poll_records=cfg.batch_size,
            partition_assignment_strategy=(RangePartitionAssignor,),
            **group_session(cfg.session_timeout_s),
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
                for core in self.cores:
                    core.flush()
                await self._snapshots(consumer, batch)
        finally:
            await consumer.stop()

    def _feed(self, record: Any) -> None:
        """Hand one record to every core; a record (or a core) that fails is skipped."""
        pos = Position(record.topic, record.partition, record.offset)
        message: FeatureVector | ValidLabel
        try:
            if record.topic == FEATURES.name:
                message = FeatureVector.model_validate_json(record.value or b"")
            else:
                message = ValidLabel.model_validate_json(record.value or b"")
        except ValidationError as exc:
            # Written by Driftline itself, so this is a bug upstream: count and go on.
            self.metrics.errors.labels(kind="bad_record").inc()
            first = exc.errors(include_url=False, include_input=False)[:1]
            self.health.skip(pos.topic, pos.partition, pos.offset, "unreadable", str(first))
            return
        for core in self.cores:
            try:
                if isinstance(message, FeatureVector):
                    core.on_vector(message, pos)
                else:
                    core.on_label(message, pos)
            except Exception as exc:
                # Isolates the record for this model: the other models still take it,
                # and the loop goes on with the next record.  (A model that raises on an
                # example is handled inside the core; this is any other failure.)
                self.metrics.errors.labels(kind="processing_error").inc()
                log.error("model %s failed on the record at %s[%d]@%d (event %s)",
                          core.spec.name, pos.topic, pos.partition, pos.offset,
                          message.event_id, exc_info=True)  # fmt: skip
                self.health.skip(pos.topic, pos.partition, pos.offset, "processing_error",
                                 f"model {core.spec.name}: {_describe(exc)}",
                                 event_id=message.event_id)  # fmt: skip

    def _start_fit(self, i: int, core: TrainingCore) -> None:
        """Start the scheduled fit of batch model ``core`` in the background, when due.

        A refit replays and fits a whole window (seconds): the online loop keeps
        consuming (and scoring arrivals) meanwhile.  One fit per model at a time.
        """
        running = self.fits.get(i)
        if running is not None and not running.done():
            return
        loop = asyncio.get_running_loop()
        if not core.snapshot_due or loop.time() < self._fit_retry_at.get(i, 0.0):
            return
        self.fits[i] = asyncio.create_task(self._fit(i, core), name=f"fit-{core.spec.name}")

    async def _fit(self, i: int, core: TrainingCore) -> None:
        try:
            if await core.snapshot() is not None:
                self._fitted = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.errors.labels(kind=f"snapshot_{type(exc).__name__}").inc()
            if not is_record_fault(exc):
                # The broker or registry is down: try again in a while, not at every poll.
                self._fit_retry_at[i] = asyncio.get_running_loop().time() + 5.0
                log.warning("scheduled fit of %s failed: %s", core.spec.name, _describe(exc))
                return
            core.postpone_snapshot()
            log.error("scheduled fit of %s failed: %s; the next one is tried after %d more "
                      "examples", core.spec.name, _describe(exc), core.config.snapshot_every,
                      exc_info=not isinstance(exc, DriftlineError))  # fmt: skip

    async def _snapshots(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]]
    ) -> None:
        registered, self._fitted = self._fitted, False
        for i, core in enumerate(self.cores):
            if not core.spec.online:
                self._start_fit(i, core)
                continue
            if not core.snapshot_due:
                continue
            try:
                if await core.snapshot() is not None:
                    registered = True
            except Exception as exc:
                self.metrics.errors.labels(kind=f"snapshot_{type(exc).__name__}").inc()
                if not is_record_fault(exc):
                    # The registry or broker is down: keep learning, try at the next batch.
                    log.warning("snapshot of %s failed: %s", core.spec.name, _describe(exc))
                    continue
                # Refused, or the model cannot be snapshotted (pickled, described): the
                # same snapshot would fail at every batch, so wait for the next schedule.
                core.postpone_snapshot()
                log.error("snapshot of %s failed: %s; the next one is tried after %d more "
                          "examples", core.spec.name, _describe(exc),
                          core.config.snapshot_every,
                          exc_info=not isinstance(exc, DriftlineError))  # fmt: skip
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


class UnservedRecorder(Protocol):
    """Where a retrain request that training cannot serve is recorded (the registry)."""

    async def record_unserved_retrain(
        self, name: str, request_id: str, *, reason: str, actor: str, drift_ids: Sequence[str]
    ) -> int:
        """Record it on model ``name`` (idempotent by request id); the model's unserved count."""
        ...


@dataclass
class _HeldRequest:
    """A retrain request read but not yet served (its offset is not committed)."""

    tp: TopicPartition
    offset: int
    request: RetrainRequest
    headers: Any
    next_try: float = 0.0
    """Event-loop time of the next attempt (sooner when a core says labels arrived)."""
    waiting: bool = False
    attempts: int = 0
    failures: int = 0
    """Failures on the world since the last attempt that got through (the back-off's n)."""
    done_cores: set[int] = field(default_factory=set)


class KafkaRetrainLoop:
    """Serves ``driftline.retrain`` requests; a request is committed only once served.

    A request whose window after ``since`` holds too few labelled examples stays
    held (uncommitted, so a restart reads it again) and is tried again as soon as a
    core counts enough new examples after ``since`` (see
    :meth:`TrainingCore.retrain_recheck_due`), every ``retrain_recheck_s`` in any
    case, and for the last time after ``retrain_max_wait_s``.  The offset committed
    per partition is that of the oldest held request, so later requests never
    commit past an earlier unserved one; the registry's idempotency (the request id)
    keeps a request served twice after a restart from making two candidates.

    A request that fails is sorted with :func:`is_record_fault`: one that can never
    be served (unreadable, for a model no spec here names, impossible ``since``,
    refused by the registry, making training raise) is dropped and committed with a
    ``skipped the record`` log line (``driftline_records_skipped_total``); one that
    failed on the world (registry, broker) is retried after a jittered exponential
    back-off (:func:`~driftline.kafkaio.backoff`, 0.5 s doubling up to 10 s; other held
    requests are tried meanwhile), each failure reported to ``health`` so that one stuck
    for ``kafka.stall_after_s`` shows as a stall of its partition.

    A request for a model no core trains is recorded with ``unserved`` (when given)
    and committed: the reason is ``unservable[model]`` for a model whose spec has no
    trainer, else that training has no spec of it.  Without ``unserved`` such a
    request is skipped (``unknown_model``).  The registry refusing the record (an
    unknown model, a registry without the RPC) skips it too (``unserved_unrecorded``);
    an unreachable registry is retried like any error of the world.
    """

    def __init__(
        self,
        cores: Sequence[TrainingCore],
        settings: PlatformSettings,
        metrics: ServiceMetrics,
        replay: ReplayFn,
        health: ConsumerHealth,
        *,
        unserved: UnservedRecorder | None = None,
        unservable: Mapping[str, str] | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.cores = cores
        self.leadership = leadership or Leadership(RETRAIN.name)
        self.settings = settings
        self.metrics = metrics
        self.replay = replay
        self.health = health
        health.expect(RETRAIN_SKIP_REASONS)
        self.unserved = unserved
        self.unservable = dict(unservable or {})
        self.unserved_recorded = Counter(
            "driftline_training_retrain_unserved",
            "Retrain requests training cannot serve (no spec, or a model without a trainer), "
            "recorded on the model in the registry",
            ["model"],
            registry=metrics.registry,
        )
        self.held: list[_HeldRequest] = []
        """Requests read and not yet served, oldest first."""
        self._backoff = backoff(first_s=0.5, max_s=10.0)
        self._read_to: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set."""
        cfg = self.settings.training
        consumer = make_consumer(
            self.settings.kafka,
            f"training-retrain-{cfg.instance_id}",
            group_id=f"{cfg.consumer_group}-retrain",
            security=kafka_auth(self.settings.security, "training"),
            max_poll_records=10,
            partition_assignment_strategy=(self.leadership.assignor(),),
            **group_session(cfg.session_timeout_s),
        )
        consumer.subscribe([RETRAIN.name], listener=self.leadership)
        await consumer.start()
        try:
            await self.consume(consumer, stop)
        finally:
            await consumer.stop()

    async def consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """The loop of :meth:`run` over a started consumer of ``driftline.retrain``."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=10)
            for tp, records in batch.items():
                for r in records:
                    self.metrics.messages_in.labels(topic=tp.topic).inc()
                    request = self._parse(tp, r)
                    if request is not None:
                        self.held.append(_HeldRequest(tp, r.offset, request, r.headers))
                    self._read_to[tp] = r.offset + 1
            for held in list(self.held):
                if stop.is_set():
                    break
                if self._due(held, loop.time()) and await self._attempt(held, loop.time()):
                    self.held.remove(held)
            await self._commit(consumer)

    def _parse(self, tp: TopicPartition, record: Any) -> RetrainRequest | None:
        try:
            return RetrainRequest.model_validate_json(record.value or b"")
        except ValidationError as exc:
            self.metrics.errors.labels(kind="bad_retrain_request").inc()
            first = exc.errors(include_url=False, include_input=False)[:1]
            self.health.skip(tp.topic, tp.partition, record.offset, "unreadable",
                             f"not a retrain request: {first}")  # fmt: skip
            return None

    def _due(self, held: _HeldRequest, now: float) -> bool:
        if now >= held.next_try:
            return True
        if not held.waiting:
            return False  # backing off after an error
        rid = held.request.request_id
        return any(
            core.retrain_recheck_due(rid) or core.retrain_deadline_passed(held.request)
            for i, core in enumerate(self.cores)
            if i not in held.done_cores
        )

    async def _attempt(self, held: _HeldRequest, now: float) -> bool:
        """One try at serving ``held`` in every core; True when it is done with."""
        request = held.request
        held.attempts += 1
        # The retraining continues the trace of the request (which links to the
        # drift detections, and they to the events, that caused it).
        with tracer.start_as_current_span(
            f"{RETRAIN.name} process",
            context=context_from_headers(held.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                **messaging_attributes(
                    RETRAIN.name, "process", partition=held.tp.partition, offset=held.offset
                ),
                RETRAIN_ID: request.request_id,
                MODEL_NAME: request.model_name,
                "driftline.retrain.attempt": held.attempts,
            },
        ):
            statuses: list[RetrainStatus] = []
            try:
                if self.unserved is not None and not any(
                    core.spec.name == request.model_name for core in self.cores
                ):
                    return await self._record_unserved(held, self.unserved)
                for i, core in enumerate(self.cores):
                    if i in held.done_cores:
                        continue
                    attempt = await core.attempt_retrain(request, self.replay)
                    statuses.append(attempt.status)
                    if attempt.done:
                        held.done_cores.add(i)
                    if attempt.restored is not None:
                        log.info(
                            "retrain %s → %s v%d restored as champion (%s)",
                            request.request_id,
                            core.spec.name,
                            attempt.restored.version.version,
                            attempt.restored.decision.reason,
                        )
                    if attempt.outcome is not None:
                        log.info(
                            "retrain %s → %s v%d (%s)",
                            request.request_id,
                            core.spec.name,
                            attempt.outcome.version.version,
                            attempt.outcome.alias,
                        )
            except Exception as exc:
                self.metrics.errors.labels(kind=f"retrain_{type(exc).__name__}").inc()
                if is_record_fault(exc):
                    self._refuse(held, exc)
                    return True
                # Broker or registry unreachable: the same request may well succeed later.
                where = {(held.tp.topic, held.tp.partition): self._oldest(held)}
                self.health.failed(where, _describe(exc))
                return self._back_off(held, now, _describe(exc))
        if held.attempts == 1 and all(s is RetrainStatus.OTHER_MODEL for s in statuses):
            known = ", ".join(core.spec.name for core in self.cores)
            self.health.skip(RETRAIN.name, held.tp.partition, held.offset, "unknown_model",
                             f"retrain request {request.request_id} names model "
                             f"{request.model_name!r}, which is not trained here ({known})",
                             event_id=request.request_id)  # fmt: skip
        held.failures = 0
        held.waiting = len(held.done_cores) < len(self.cores)
        held.next_try = now + self.settings.training.retrain_recheck_s
        return not held.waiting

    def unserved_reason(self, model: str) -> str:
        """Why a retrain request for ``model`` cannot be served here, for a person."""
        reason = self.unservable.get(model)
        if reason is not None:
            return reason
        known = ", ".join(sorted(core.spec.name for core in self.cores)) or "none"
        return (
            f"training has no model spec named {model!r} (it trains {known}; "
            f"training.models_dir is {self.settings.training.models_dir}): add a spec with a "
            "pipeline to retrain it, or register new versions trained elsewhere"
        )

    async def _record_unserved(self, held: _HeldRequest, unserved: UnservedRecorder) -> bool:
        """Record ``held`` on its model as unserved; True (done) unless the registry is
        unreachable (then the caller backs off and tries again)."""
        request = held.request
        reason = self.unserved_reason(request.model_name)
        try:
            count = await unserved.record_unserved_retrain(
                request.model_name,
                request.request_id,
                reason=reason,
                actor=self.settings.training.actor,
                drift_ids=list(request.drift_ids),
            )
        except Exception as exc:
            if not is_record_fault(exc):
                raise
            # Refused for good (a model the registry does not know, a registry without
            # the RPC): retrying cannot help, so it is skipped loudly, not held forever.
            self.health.skip(RETRAIN.name, held.tp.partition, held.offset, "unserved_unrecorded",
                             f"retrain request {request.request_id} for {request.model_name} "
                             f"cannot be served ({reason}) and the registry did not record it: "
                             f"{_describe(exc)}", event_id=request.request_id)  # fmt: skip
            return True
        self.unserved_recorded.labels(model=request.model_name).inc()
        log.warning("retrain %s for %s cannot be served: %s; recorded on the model (%d "
                    "unserved)", request.request_id, request.model_name, reason, count)  # fmt: skip
        return True

    def _refuse(self, held: _HeldRequest, exc: Exception) -> None:
        """Drop a request that can never be served (the caller commits past it)."""
        if isinstance(exc, DriftlineError):
            reason = "invalid_request"
        else:
            # Not a refusal but training raising on this request: a bug to report.
            reason = "processing_error"
            log.error("retrain %s raised; dropping the request", held.request.request_id,
                      exc_info=exc)  # fmt: skip
        self.health.skip(RETRAIN.name, held.tp.partition, held.offset, reason,
                         f"retrain request {held.request.request_id} for "
                         f"{held.request.model_name} refused: {_describe(exc)}",
                         event_id=held.request.request_id)  # fmt: skip

    def _oldest(self, held: _HeldRequest) -> int:
        # The commit point of the partition: where a restart would start again.
        return min(h.offset for h in self.held if h.tp == held.tp)

    def _back_off(self, held: _HeldRequest, now: float, why: str) -> bool:
        held.failures += 1
        delay = delay_before(self._backoff, held.failures)
        log.warning("retrain %s: %s; retrying in %.1fs", held.request.request_id, why,
                    delay)  # fmt: skip
        held.waiting = False
        held.next_try = now + delay
        return False

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        offsets: dict[TopicPartition, int] = {}
        for tp, read_to in self._read_to.items():
            oldest_held = min((h.offset for h in self.held if h.tp == tp), default=read_to)
            if self._committed.get(tp) != oldest_held:
                offsets[tp] = oldest_held
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            self.metrics.errors.labels(kind="commit").inc()
            log.warning("retrain offset commit failed (requests will be read again): %s", exc)
            return
        self._committed.update(offsets)
        self.health.progressed((tp.topic, tp.partition) for tp in offsets)
