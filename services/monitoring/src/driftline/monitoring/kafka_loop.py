"""The monitor's Kafka transport: four topics in, ``driftline.drift`` / ``driftline.retrain`` out.

Data topics are read in the monitor's consumer group and committed after the
detections they caused are acknowledged by the broker (at-least-once).  The
registry log ``driftline.models`` is read from its beginning on every start, outside
any group, and up to its end before any data, so the monitor always knows every
registered version, its reference and the current champion.

No record stops the loop.  One that does not parse (``unreadable``), one the core
refuses (:class:`~driftline.monitoring.core.Refused`: ``unknown_model``,
``unknown_version``, ``invalid``, ``label_type``) and one whose processing raises
(``processing_error``, logged with its traceback) is skipped with a log line naming
its place and counted in ``driftline_records_skipped_total{topic, reason}``.  A
``driftline.predictions`` record may be a batch of rows (``PredictionBatch``): its
rows go to the core one by one, and a row refused or raising is skipped alone.
Publishing detections is I/O: a failure is retried with a back-off, reported to
:meth:`ConsumerHealth.failed` at the batch's offsets (a long one is a stall), while
a detection the broker refuses for itself is dropped and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext
from pydantic import ValidationError

from driftline.contracts.messages import (
    FeatureVector,
    PredictionRecord,
    RegistryEvent,
    ValidLabel,
    prediction_records,
)
from driftline.contracts.topics import (
    DRIFT,
    FEATURES,
    LABELS_VALID,
    MODELS,
    PREDICTIONS,
    RETRAIN,
    Topic,
)
from driftline.kafkaio import (
    Leadership,
    group_session,
    is_record_fault,
    make_consumer,
    make_producer,
    read_from_start,
    retry_io,
    send_model,
    traceparent_of,
    unreadable_detail,
)
from driftline.monitoring.core import MonitorCore, Outputs, Refused
from driftline.monitoring.monitor_metrics import MonitorMetrics
from driftline.security.kafka_auth import kafka_auth
from driftline.settings import PlatformSettings
from driftline.telemetry import (
    ConsumerHealth,
    ServiceMetrics,
    SpanContextMemo,
    messaging_attributes,
    span_context_of,
)
from driftline.telemetry.loop import DRIFT_ID, MODEL_NAME, RETRAIN_ID

log = logging.getLogger(__name__)
tracer = trace.get_tracer("driftline.monitoring")

Positions = Mapping[tuple[str, int], int]
"""``(topic, partition) -> offset`` of the records a publication is for."""

Value = FeatureVector | PredictionRecord | ValidLabel | RegistryEvent
"""What the core takes: one record of an input topic (a prediction batch is its rows)."""


def _one(model: type[Value]) -> Callable[[bytes], Sequence[Value]]:
    def read(raw: bytes) -> Sequence[Value]:
        return (model.model_validate_json(raw),)

    return read


_READERS: dict[str, Callable[[bytes], Sequence[Value]]] = {
    FEATURES.name: _one(FeatureVector),
    # A record or a batch of them (ModelInfer, PredictBatch): the rows, in order.
    PREDICTIONS.name: prediction_records,
    LABELS_VALID.name: _one(ValidLabel),
    MODELS.name: _one(RegistryEvent),
}

__all__ = ["KafkaMonitorLoop", "trace_id_of"]

SKIP_REASONS: dict[str, tuple[str, ...]] = {
    FEATURES.name: ("unreadable", "processing_error"),
    PREDICTIONS.name: ("unreadable", "processing_error"),
    LABELS_VALID.name: ("unreadable", "processing_error", "label_type"),
    MODELS.name: ("unreadable", "processing_error", "unknown_model", "unknown_version", "invalid"),
}
"""Every reason this loop can skip a record of each topic for, created at 0 on
``driftline_records_skipped_total`` at start (see :meth:`ConsumerHealth.expect`)."""


def trace_id_of(headers: Any) -> str | None:
    """The trace id of a record's ``traceparent`` header, if it carries a valid one."""
    tp = traceparent_of(headers)
    if not tp:
        return None
    parts = tp.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


_FENCED = (ProducerFenced, InvalidProducerEpoch)
"""What a producer whose transactional id another monitor took over gets."""


def _retryable(exc: Exception) -> bool:
    return not isinstance(exc, _FENCED) and not is_record_fault(exc)


async def transactional_epoch(producer: AIOKafkaProducer) -> int:
    """A started transactional producer's (producer id, epoch) as one growing number.

    Each start of a transactional id gets a higher epoch (or, once the epoch is spent, a new
    and higher producer id) from the transaction coordinator, so the number orders the
    monitors that held the id.  aiokafka exposes them only on its transaction manager.
    """
    manager = producer._txn_manager  # no public accessor
    await manager.wait_for_pid()
    # + 1: the first holder (producer id 0, epoch 0) must outrank a standby's 0.
    return int(manager.producer_id) * 65536 + int(manager.producer_epoch) + 1


class KafkaMonitorLoop:
    """Feeds :class:`MonitorCore` from Kafka and publishes its outputs."""

    def __init__(
        self,
        core: MonitorCore,
        settings: PlatformSettings,
        metrics: ServiceMetrics,
        monitor_metrics: MonitorMetrics,
        health: ConsumerHealth,
        *,
        leadership: Leadership | None = None,
    ) -> None:
        self.core = core
        self.settings = settings
        self.leadership = leadership
        """With one, the monitor is one of several replicas: it writes in Kafka transactions
        under the one transactional id of ``monitoring.consumer_group`` (``<group>-writer``),
        so starting it fences the previous active monitor's producer, and it tells the
        election its producer's epoch."""
        self.deposed = asyncio.Event()
        """Set when the broker fenced this monitor's producer: another one is active."""
        self.metrics = metrics
        self.monitor_metrics = monitor_metrics
        self.health = health
        health.expect(SKIP_REASONS)
        self.published_drift = 0
        self.published_retrain = 0
        # A detection names the trace ids of the records behind it; these memos turn
        # them (and a retrain request's drift ids) back into spans to link to.
        self.upstream_spans = SpanContextMemo()
        self.drift_spans = SpanContextMemo()

    def dispatch(self, record: Any) -> Outputs:
        """Feed one consumed record to the core; what it caused (nothing if it was skipped).

        A prediction batch's rows are fed one by one: a row the core refuses or whose
        processing raises is skipped alone (one skip per row, at the batch's offset,
        naming the row's request id), and the batch's other rows still count.
        """
        topic, partition, offset = record.topic, record.partition, record.offset
        self.metrics.messages_in.labels(topic=topic).inc()
        try:
            values = _READERS[topic](record.value or b"")
        except ValidationError as exc:
            self.metrics.errors.labels(kind="bad_message").inc()
            detail = unreadable_detail(record.value, exc)
            self.health.skip(topic, partition, offset, "unreadable", detail)
            return Outputs()
        trace_id = self._trace_id(record.headers)
        if len(values) == 1:
            return self._feed(values[0], trace_id, topic, partition, offset)
        out = Outputs()
        for value in values:
            out.extend(self._feed(value, trace_id, topic, partition, offset))
        return out

    def _feed(
        self, value: Value, trace_id: str | None, topic: str, partition: int, offset: int
    ) -> Outputs:
        """Apply one value, skipping it (with the reason) when the core refuses it or raises."""
        event_id = getattr(value, "event_id", None)
        # A batch's rows share its offset: the request id tells which row it was.
        row = f"prediction {value.request_id!r}: " if isinstance(value, PredictionRecord) else ""
        try:
            out = self._apply(value, trace_id)
        except Refused as refused:
            self.health.skip(
                topic, partition, offset, refused.reason, row + refused.detail, event_id=event_id
            )
            return Outputs()
        except Exception as exc:
            # A detector that raises on one record (a number beyond float range, a
            # bug) must not stop the monitor: the record is skipped, the rest goes on.
            self.metrics.errors.labels(kind="processing_error").inc()
            log.error(
                "processing the record at %s[%d]@%d (event %s) raised",
                topic,
                partition,
                offset,
                event_id,
                exc_info=True,
            )
            self.health.skip(
                topic,
                partition,
                offset,
                "processing_error",
                f"{row}{type(exc).__name__}: {exc}",
                event_id=event_id,
            )
            return Outputs()
        for label in out.refused_labels:
            # Read earlier, refused now that its prediction came: its offset is behind us.
            self.health.skip(
                LABELS_VALID.name, None, None, "label_type", label.detail, event_id=label.event_id
            )
        return out

    def _trace_id(self, headers: Any) -> str | None:
        """The record's trace id, its upstream span remembered to link detections to."""
        trace_id = trace_id_of(headers)
        if trace_id is not None:
            upstream = span_context_of(traceparent_of(headers))
            if upstream is not None:
                self.upstream_spans.remember(trace_id, upstream)
        return trace_id

    def _apply(self, value: Value, trace_id: str | None) -> Outputs:
        if isinstance(value, FeatureVector):
            return self.core.on_features(value, trace_id)
        if isinstance(value, PredictionRecord):
            return self.core.on_prediction(value, trace_id)
        if isinstance(value, ValidLabel):
            return self.core.on_label(value, trace_id)
        return self.core.on_registry(value)

    async def _publish(self, producer: AIOKafkaProducer, out: Outputs) -> None:
        if self.leadership is None:
            await self._send(producer, out)
            return
        # One transaction per batch of outputs: a fenced producer can write nothing.
        async with producer.transaction():
            await self._send(producer, out)

    async def _send(self, producer: AIOKafkaProducer, out: Outputs) -> None:
        futures = []
        for ev in out.drift:
            # A detection starts a trace of its own, linked to the traces of the
            # records that caused it; its record carries the new trace on.
            with _publish_span(
                DRIFT,
                ev.model_name,
                self.upstream_spans.links(ev.trace_ids),
                {
                    DRIFT_ID: ev.drift_id,
                    MODEL_NAME: ev.model_name,
                    "driftline.drift.kind": ev.kind.value,
                    "driftline.drift.detector": ev.detector,
                },
            ) as span:
                self.drift_spans.remember(ev.drift_id, span.get_span_context())
                futures.append(await send_model(producer, DRIFT, ev.model_name, ev))
            self.monitor_metrics.detections.labels(
                model=ev.model_name, kind=ev.kind.value, detector=ev.detector
            ).inc()
        for req in out.retrain:
            # The loop is one trace: the request continues the (latest) detection that
            # caused it, and links to any other; training, the registry and serving
            # continue it in turn.
            drifts = self.drift_spans.links(req.drift_ids)
            with _publish_span(
                RETRAIN,
                req.model_name,
                drifts[:-1],
                {RETRAIN_ID: req.request_id, MODEL_NAME: req.model_name},
                parent=drifts[-1].context if drifts else None,
            ):
                futures.append(await send_model(producer, RETRAIN, req.model_name, req))
            self.monitor_metrics.retrain_requests.labels(model=req.model_name).inc()
            log.info("retraining requested: %s (%s)", req.request_id, req.reason)
        if futures:
            await asyncio.gather(*futures)
        self.published_drift += len(out.drift)
        self.published_retrain += len(out.retrain)
        if out.drift:
            self.metrics.messages_out.labels(topic=DRIFT.name).inc(len(out.drift))
        if out.retrain:
            self.metrics.messages_out.labels(topic=RETRAIN.name).inc(len(out.retrain))

    async def run(self, stop: asyncio.Event) -> None:
        """Process until ``stop`` is set."""
        cfg = self.settings.monitoring
        security = kafka_auth(self.settings.security, "monitoring")
        data = make_consumer(
            self.settings.kafka,
            f"monitoring-{cfg.instance_id}",
            FEATURES,
            PREDICTIONS,
            LABELS_VALID,
            group_id=cfg.consumer_group,
            security=security,
            max_poll_records=2000,
            **group_session(cfg.session_timeout_s),
        )
        models: AIOKafkaConsumer = make_consumer(
            self.settings.kafka,
            f"monitoring-{cfg.instance_id}-models",
            group_id=None,
            security=security,
        )
        writer: dict[str, Any] = {}
        if self.leadership is not None:
            writer = {"transactional_id": f"{cfg.consumer_group}-writer"}
        producer = make_producer(
            self.settings.kafka, f"monitoring-{cfg.instance_id}", security=security, **writer
        )
        # The producer first: as the one transactional id, it fences the previous monitor.
        await producer.start()
        if self.leadership is not None:
            self.leadership.epoch = await transactional_epoch(producer)
            log.info("active monitor: writing under %s, producer epoch %d",
                     writer["transactional_id"], self.leadership.epoch)  # fmt: skip
        await models.start()
        await data.start()
        next_refresh = time.monotonic()
        try:
            await self._read_models_log(models, stop)
            # Every known model's counters at 0 before any data can cause a detection.
            self.monitor_metrics.track_known(self.core)
            while not stop.is_set():
                out = Outputs()
                # Registry events first: a champion change must apply before later data.
                reg = await models.getmany(timeout_ms=0, max_records=500)
                for recs in reg.values():
                    for r in recs:
                        out.extend(self.dispatch(r))
                if reg:
                    self.monitor_metrics.track_known(self.core)
                batch = await data.getmany(timeout_ms=200, max_records=2000)
                # A batch comes grouped by partition; merged by record time, the error
                # stream keeps the order events happened in, so the onset estimate holds.
                records = sorted(
                    (r for recs in batch.values() for r in recs), key=lambda r: r.timestamp
                )
                for r in records:
                    out.extend(self.dispatch(r))
                if time.monotonic() >= next_refresh:
                    out.extend(self.core.tick())
                    self.monitor_metrics.refresh(self.core)
                    self.core.sample(time.time())
                    next_refresh = time.monotonic() + cfg.publish_interval_s
                positions = {
                    (tp.topic, tp.partition): recs[0].offset for tp, recs in batch.items() if recs
                }
                try:
                    await self.publish_with_retry(producer, out, stop, data, positions)
                except (ProducerFenced, InvalidProducerEpoch) as exc:
                    log.error("this monitor's producer was fenced (%s): another monitor is "
                              "active; nothing of this batch was written", exc)  # fmt: skip
                    self.deposed.set()
                    return
                if batch:
                    await self._commit(data)
        finally:
            await data.stop()
            await models.stop()
            await producer.stop()

    async def _commit(self, data: AIOKafkaConsumer) -> None:
        try:
            await data.commit()
        except KafkaError as exc:
            # The group rebalanced under us (a replica joined or left): the records are
            # read again by whoever holds their partitions now; the detections they caused
            # are already written.
            self.metrics.errors.labels(kind="commit").inc()
            log.warning("offset commit failed (the records will be read again): %s", exc)

    async def _read_models_log(self, models: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Apply ``driftline.models`` from its start to its end as of now, before any data.

        Data read before its version's registration would be refused as naming an
        unknown version, and a prediction judged against a champion not yet read.
        """
        # One partition by contract; read them all regardless.
        end = await read_from_start(models, MODELS)
        read = 0
        while not stop.is_set():
            if all([await models.position(tp) >= offset for tp, offset in end.items()]):
                break
            batch = await models.getmany(timeout_ms=200, max_records=500)
            for recs in batch.values():
                for r in recs:
                    self.dispatch(r)
                    read += 1
        log.info("read %d record(s) of %s before any data", read, MODELS.name)

    async def publish_with_retry(
        self,
        producer: AIOKafkaProducer,
        out: Outputs,
        stop: asyncio.Event,
        data: AIOKafkaConsumer,
        positions: Positions,
    ) -> None:
        """Publish ``out``; returns once it is acknowledged (or ``stop`` is set: re-raised).

        An I/O failure is retried (:func:`retry_io`: a jittered exponential back-off
        from 0.2 s up to 5 s, cut short by ``stop``) and reported to
        :meth:`ConsumerHealth.failed` at ``positions`` (the first offset of each partition
        of the batch that caused ``out``; the data consumer's positions when empty); a
        record the broker refuses for itself is dropped (the others still go).
        """
        waiting = positions

        async def report(exc: Exception, delay: float) -> None:
            nonlocal waiting
            self.metrics.errors.labels(kind=type(exc).__name__).inc()
            # Nothing read is committed until this goes through: the data partitions
            # wait here (all of them when only a timer's output is at stake), and a
            # long wait shows as a stall.
            if not waiting:
                waiting = await _positions_of(data)
            self.health.failed(waiting, exc)
            log.warning("publishing detections failed (%s); retrying in %.1fs", exc, delay)

        try:
            await retry_io(
                lambda: self._publish(producer, out),
                first_s=0.2,
                max_s=5.0,
                on_retry=report,
                retryable=_retryable,
                stop=stop,
            )
        except Exception as exc:
            if not is_record_fault(exc) or isinstance(exc, _FENCED):
                raise
            # One of the records cannot be published (the broker refuses it for itself):
            # they go one by one, and only those that fail so are dropped.
            items = [Outputs(drift=[d]) for d in out.drift] + [
                Outputs(retrain=[r]) for r in out.retrain
            ]
            if len(items) <= 1:
                self._drop(out, exc)
                return
            for item in items:
                await self.publish_with_retry(producer, item, stop, data, positions)
            return
        self.health.progressed(waiting)

    def _drop(self, out: Outputs, exc: Exception) -> None:
        """Give up on the one record of ``out``, which the broker refuses for itself."""
        self.metrics.errors.labels(kind="unpublishable").inc()
        ids = [d.drift_id for d in out.drift] + [r.request_id for r in out.retrain]
        log.error(
            "dropped %s: it cannot be published (%s: %s)",
            ", ".join(ids) or "nothing",
            type(exc).__name__,
            exc,
            exc_info=exc,
        )


async def _positions_of(data: AIOKafkaConsumer) -> dict[tuple[str, int], int]:
    """The data consumer's position on each assigned partition."""
    return {(tp.topic, tp.partition): await data.position(tp) for tp in data.assignment()}


def _publish_span(
    topic: Topic,
    key: str,
    links: list[Link],
    attributes: Mapping[str, str],
    *,
    parent: SpanContext | None = None,
) -> AbstractContextManager[Span]:
    """The producer span of a record under ``parent``, or starting a trace of its own,
    linked to the traces of what caused it (its record carries the trace on)."""
    return tracer.start_as_current_span(
        f"{topic.name} publish",
        context=(
            otel_context.Context()
            if parent is None
            else trace.set_span_in_context(NonRecordingSpan(parent))
        ),
        kind=trace.SpanKind.PRODUCER,
        links=links,
        attributes={**messaging_attributes(topic.name, "publish", key=key), **attributes},
    )
