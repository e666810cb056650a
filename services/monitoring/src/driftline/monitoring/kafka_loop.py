"""The monitor's Kafka transport: four topics in, ``driftline.drift`` / ``driftline.retrain`` out.

Data topics are read in the monitor's consumer group and committed after the
detections they caused are acknowledged by the broker (at-least-once).  The
registry log ``driftline.models`` is read from its beginning on every start, outside
any group, so the monitor always knows every version's reference and the current
champion.  A record that does not parse is counted (``driftline_errors_total
{kind="bad_message"}``) and skipped: it never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import ValidationError

from driftline.contracts.messages import FeatureVector, PredictionRecord, RegistryEvent, ValidLabel
from driftline.contracts.topics import DRIFT, FEATURES, LABELS_VALID, MODELS, PREDICTIONS, RETRAIN
from driftline.kafkaio import make_consumer, make_producer, send_model, traceparent_of
from driftline.monitoring.core import MonitorCore, Outputs
from driftline.monitoring.monitor_metrics import MonitorMetrics
from driftline.settings import PlatformSettings
from driftline.telemetry import (
    ServiceMetrics,
    SpanContextMemo,
    messaging_attributes,
    span_context_of,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("driftline.monitoring")

__all__ = ["KafkaMonitorLoop", "trace_id_of"]


def trace_id_of(headers: Any) -> str | None:
    """The trace id of a record's ``traceparent`` header, if it carries a valid one."""
    tp = traceparent_of(headers)
    if not tp:
        return None
    parts = tp.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class KafkaMonitorLoop:
    """Feeds :class:`MonitorCore` from Kafka and publishes its outputs."""

    def __init__(
        self,
        core: MonitorCore,
        settings: PlatformSettings,
        metrics: ServiceMetrics,
        monitor_metrics: MonitorMetrics,
    ) -> None:
        self.core = core
        self.settings = settings
        self.metrics = metrics
        self.monitor_metrics = monitor_metrics
        self.published_drift = 0
        self.published_retrain = 0
        # A detection names the trace ids of the records behind it; these memos turn
        # them (and a retrain request's drift ids) back into spans to link to.
        self.upstream_spans = SpanContextMemo()
        self.drift_spans = SpanContextMemo()

    def _dispatch(self, record: Any) -> Outputs:
        topic = record.topic
        self.metrics.messages_in.labels(topic=topic).inc()
        trace_id = trace_id_of(record.headers)
        if trace_id is not None:
            upstream = span_context_of(traceparent_of(record.headers))
            if upstream is not None:
                self.upstream_spans.remember(trace_id, upstream)
        try:
            if topic == FEATURES.name:
                return self.core.on_features(
                    FeatureVector.model_validate_json(record.value), trace_id
                )
            if topic == PREDICTIONS.name:
                return self.core.on_prediction(
                    PredictionRecord.model_validate_json(record.value), trace_id
                )
            if topic == LABELS_VALID.name:
                return self.core.on_label(ValidLabel.model_validate_json(record.value), trace_id)
            if topic == MODELS.name:
                return self.core.on_registry(RegistryEvent.model_validate_json(record.value))
        except (ValidationError, ValueError) as exc:
            self.metrics.errors.labels(kind="bad_message").inc()
            log.warning(
                "skipping bad record %s:%d:%d: %s",
                record.topic,
                record.partition,
                record.offset,
                str(exc).splitlines()[0],
            )
        return Outputs()

    async def _publish(self, producer: AIOKafkaProducer, out: Outputs) -> None:
        futures = []
        for ev in out.drift:
            # A detection starts a trace of its own, linked to the traces of the
            # records that caused it; its record carries the new trace on.
            with tracer.start_as_current_span(
                f"{DRIFT.name} publish",
                context=otel_context.Context(),
                kind=trace.SpanKind.PRODUCER,
                links=self.upstream_spans.links(ev.trace_ids),
                attributes={
                    **messaging_attributes(DRIFT.name, "publish", key=ev.model_name),
                    "driftline.drift.id": ev.drift_id,
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
            with tracer.start_as_current_span(
                f"{RETRAIN.name} publish",
                context=otel_context.Context(),
                kind=trace.SpanKind.PRODUCER,
                links=self.drift_spans.links(req.drift_ids),
                attributes={
                    **messaging_attributes(RETRAIN.name, "publish", key=req.model_name),
                    "driftline.retrain.request_id": req.request_id,
                },
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
        data = make_consumer(
            self.settings.kafka,
            f"monitoring-{cfg.instance_id}",
            FEATURES,
            PREDICTIONS,
            LABELS_VALID,
            group_id=cfg.consumer_group,
            max_poll_records=2000,
        )
        models: AIOKafkaConsumer = make_consumer(
            self.settings.kafka, f"monitoring-{cfg.instance_id}-models", MODELS, group_id=None
        )
        producer = make_producer(self.settings.kafka, f"monitoring-{cfg.instance_id}")
        await models.start()
        await data.start()
        await producer.start()
        next_refresh = time.monotonic()
        try:
            while not stop.is_set():
                # Registry events first: a champion change must apply before later data.
                reg = await models.getmany(timeout_ms=0, max_records=500)
                for recs in reg.values():
                    for r in recs:
                        await self._publish(producer, self._dispatch(r))
                batch = await data.getmany(timeout_ms=200, max_records=2000)
                out = Outputs()
                # A batch comes grouped by partition; merged by record time, the error
                # stream keeps the order events happened in, so the onset estimate holds.
                records = sorted(
                    (r for recs in batch.values() for r in recs), key=lambda r: r.timestamp
                )
                for r in records:
                    out.extend(self._dispatch(r))
                if time.monotonic() >= next_refresh:
                    out.extend(self.core.tick())
                    self.monitor_metrics.refresh(self.core)
                    self.core.sample(time.time())
                    next_refresh = time.monotonic() + cfg.publish_interval_s
                await self._publish_with_retry(producer, out, stop)
                if batch:
                    await data.commit()
        finally:
            await data.stop()
            await models.stop()
            await producer.stop()

    async def _publish_with_retry(
        self, producer: AIOKafkaProducer, out: Outputs, stop: asyncio.Event
    ) -> None:
        delay = 0.2
        while True:
            try:
                await self._publish(producer, out)
                return
            except KafkaError as exc:
                self.metrics.errors.labels(kind=type(exc).__name__).inc()
                log.warning("publishing detections failed (%s); retrying in %.1fs", exc, delay)
                if stop.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
