"""One demo run against a running platform: the stream, the ``Predict`` calls, the topics.

:class:`DemoRun` produces the scenario to ``driftline.events`` / ``driftline.labels``
at the chosen rate, asks serving for a prediction per event over gRPC, and
consumes ``driftline.drift``, ``driftline.retrain``, ``driftline.models`` and
``driftline.predictions``; everything it sees goes to its :class:`DemoObserver`.

It traces like an instrumented producer: each event is sent under a span of its
own (its record carries the ``traceparent``); the event's ``Predict`` call, with the
context in its metadata, and its label later are children of that span, so
ingestion, features and serving answer in the event's trace (and a concept drift
the label reveals links to it).  The spans go where the services' go
(``telemetry.otlp_endpoint``, or the local Jaeger the demo's platform points them
at), sampled at ``telemetry.sample_ratio``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time
import uuid
from asyncio import FIRST_COMPLETED
from collections import deque
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, ValidationError

from driftline.cli.demo.milestones import DemoObserver
from driftline.cli.demo.options import DemoOptions
from driftline.contracts.messages import (
    DriftEvent,
    RegistryEvent,
    RetrainRequest,
    prediction_records,
)
from driftline.contracts.topics import DRIFT, EVENTS, LABELS, MODELS, PREDICTIONS, RETRAIN, Topic
from driftline.devtools.infra import OTLP_ENDPOINT_ENV, InfraError
from driftline.devtools.scenario import Application, ScenarioConfig, schedule
from driftline.edge.values import value_from_pb, values_to_pb
from driftline.kafkaio import make_consumer, make_producer, send_model
from driftline.security import grpc_tls
from driftline.security.kafka_auth import kafka_auth
from driftline.settings import PlatformSettings
from driftline.telemetry import configure_tracing, messaging_attributes, rpc_attributes
from driftline.v1 import (
    common_pb2,
    feature_store_pb2,
    feature_store_pb2_grpc,
    predictor_pb2,
    predictor_pb2_grpc,
)

__all__ = ["DemoRun"]


def _grpc_target(host: str, port: int) -> str:
    return f"{'127.0.0.1' if host in ('0.0.0.0', '', '::') else host}:{port}"


def demo_tracing(settings: PlatformSettings) -> TracerProvider:
    """The demo's own tracer provider (service ``demo``), exporting where the services do.

    The endpoint is ``telemetry.otlp_endpoint`` or, when the demo's platform
    pointed the services at its Jaeger, the variable it set for them.
    """
    telemetry = settings.telemetry
    endpoint = telemetry.otlp_endpoint or os.environ.get(OTLP_ENDPOINT_ENV) or None
    return configure_tracing(
        "demo", telemetry.model_copy(update={"otlp_endpoint": endpoint}), install_global=False
    )


def _decode(model: type[BaseModel], raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        return None


class DemoRun:
    """One run of the scenario against a running platform."""

    def __init__(self, settings: PlatformSettings, options: DemoOptions, run_id: str) -> None:
        self.settings = settings
        self.options = options
        self.run_id = run_id
        self.prefix = f"demo-{run_id}"
        self.scenario = ScenarioConfig(
            events=options.events,
            drift_at=options.drift_at,
            return_at=options.return_at,
            label_delay=options.label_delay,
            seed=options.seed,
            interval=timedelta(seconds=1.0 / options.rate),
            event_id_prefix=self.prefix,
        )
        self.obs = DemoObserver(self.scenario, options.model)
        self.stop_watching = asyncio.Event()
        self.models_ready = asyncio.Event()
        self.last_app: Application | None = None
        self.target = _grpc_target(settings.serving.grpc_host, settings.serving.grpc_port)
        # Any: the generated stubs are typed for the sync API; on an aio channel they
        # return awaitables.
        self._predictor: Any = None
        self.tracer: trace.Tracer = trace.NoOpTracer()
        """The producer's tracer (the demo's own provider while :meth:`run` runs)."""

    # -- topics -------------------------------------------------------------------------

    async def watch(self) -> None:
        """Consume drift, retrain, models (from the start, to know the champion) and
        predictions (from now) until told to stop."""
        consumer: AIOKafkaConsumer = make_consumer(
            self.settings.kafka,
            f"demo-{self.run_id}",
            group_id=None,
            security=kafka_auth(self.settings.security, "admin"),
            isolation_level="read_uncommitted",
        )
        await consumer.start()
        try:
            # The declaration is the contract for the partition count.
            parts = [
                TopicPartition(topic.name, p)
                for topic in (DRIFT, RETRAIN, MODELS, PREDICTIONS)
                for p in range(topic.partitions)
            ]
            consumer.assign(parts)
            ends = await consumer.end_offsets(parts)
            history_end: dict[TopicPartition, int] = {}
            for tp in parts:
                if tp.topic == MODELS.name:
                    consumer.seek(tp, 0)
                    history_end[tp] = ends[tp]
                else:
                    consumer.seek(tp, ends[tp])
            if all(ends[tp] == 0 for tp in history_end):
                self.models_ready.set()
            while not self.stop_watching.is_set():
                batch = await consumer.getmany(timeout_ms=300, max_records=2000)
                for tp, records in batch.items():
                    for record in records:
                        self._on_record(tp, record.offset, record.value, history_end)
                if not self.models_ready.is_set():
                    positions = [await consumer.position(tp) for tp in history_end]
                    if all(
                        p >= end for p, end in zip(positions, history_end.values(), strict=True)
                    ):
                        self.models_ready.set()
        finally:
            await consumer.stop()

    def _on_record(
        self, tp: TopicPartition, offset: int, raw: bytes | None, history_end: dict[Any, int]
    ) -> None:
        if tp.topic == MODELS.name:
            event = _decode(RegistryEvent, raw)
            if event is not None:
                self.obs.on_models(event, history=offset < history_end.get(tp, 0))
        elif tp.topic == DRIFT.name:
            drift = _decode(DriftEvent, raw)
            if drift is not None:
                self.obs.on_drift(drift)
        elif tp.topic == RETRAIN.name:
            request = _decode(RetrainRequest, raw)
            if request is not None:
                self.obs.on_retrain(request)
        elif tp.topic == PREDICTIONS.name and raw is not None:
            try:
                records = prediction_records(raw)  # one record, or a batch's rows
            except ValidationError:
                return
            for record in records:
                self.obs.on_prediction(record, self.prefix)

    # -- predictions --------------------------------------------------------------------

    def predictor(self) -> Any:
        """The Predictor stub (its channel is opened by :meth:`run`, inside the loop)."""
        if self._predictor is None:
            raise RuntimeError("DemoRun.predictor() used outside run()")
        return self._predictor

    def _request(self, app: Application, probe: bool) -> predictor_pb2.PredictRequest:
        request = predictor_pb2.PredictRequest(
            entity_id=app.entity_id,
            model_name=self.options.model,
            features=values_to_pb(app.features),
            request_id=f"{self.prefix}-{'probe-' + uuid.uuid4().hex[:8] if probe else app.index}",
        )
        if not probe:
            request.event_id = app.event_id
        return request

    async def predict(
        self, app: Application, probe: bool = False, parent: otel_context.Context | None = None
    ) -> None:
        """Ask serving for ``app`` and account for the answer.

        The call is a CLIENT span under ``parent`` (the event's span; a trace of its
        own when None) whose context goes in the call's metadata (``traceparent``).
        """
        obs = self.obs
        # Whether serving had answered when this call was made: calls already in flight
        # when the first answer comes may still be refused by a serving warming up.
        warming = not obs.answers
        try:
            with self.tracer.start_as_current_span(
                "driftline.v1.Predictor/Predict",
                context=parent if parent is not None else otel_context.Context(),
                kind=trace.SpanKind.CLIENT,
                attributes=rpc_attributes("driftline.v1.Predictor", "Predict"),
            ):
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                response = await self.predictor().Predict(
                    self._request(app, probe), timeout=10.0, metadata=tuple(carrier.items())
                )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if warming and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                obs.warmup_unavailable += 1
            else:
                obs.failures.append(
                    f"event {app.index}{' (probe)' if probe else ''}: {code.name}: {exc.details()}"
                )
            return
        if probe:
            obs.probes += 1
            obs.on_probe(int(response.model_version))
        else:
            obs.on_answer(app, int(response.model_version), value_from_pb(response.prediction))

    # -- the stream ---------------------------------------------------------------------

    def _publish_span(
        self, topic: Topic, app: Application, parent: otel_context.Context | None
    ) -> AbstractContextManager[trace.Span]:
        """The PRODUCER span a record of ``app`` is sent under (its record carries the
        ``traceparent``: send_model injects it), a trace of its own without ``parent``."""
        return self.tracer.start_as_current_span(
            f"{topic.name} publish",
            context=parent if parent is not None else otel_context.Context(),
            kind=trace.SpanKind.PRODUCER,
            attributes={
                **messaging_attributes(topic.name, "publish", key=app.entity_id),
                "driftline.event_id": app.event_id,
            },
        )

    async def stream(self) -> None:
        """Produce the scenario at the rate, asking for a prediction per event."""
        producer = make_producer(
            self.settings.kafka,
            f"demo-{self.run_id}",
            security=kafka_auth(self.settings.security, "admin"),
        )
        await producer.start()
        gate = asyncio.Semaphore(self.options.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        deliveries: deque[asyncio.Future[Any]] = deque()
        sent: dict[int, otel_context.Context] = {}
        """The trace context of each event whose label is still to send."""

        async def guarded(app: Application, event: otel_context.Context) -> None:
            try:
                await self.predict(app, parent=event)
            finally:
                gate.release()

        try:
            start = datetime.now(UTC)
            t0 = time.monotonic()
            self.obs.started = t0
            scenario = dataclasses.replace(self.scenario, start=start)
            self.obs.scenario = scenario
            for step in schedule(scenario):
                app = step.application
                if step.kind == "label":
                    # The label goes on in its event's trace: a concept drift its
                    # outcome completes links to the event, its prediction and this.
                    with self._publish_span(LABELS, app, sent.pop(app.index, None)):
                        deliveries.append(
                            await send_model(
                                producer,
                                LABELS,
                                app.entity_id,
                                app.raw_label(
                                    at=scenario.start + step.at_index * scenario.interval
                                ),
                            )
                        )
                    self.obs.labels_sent += 1
                    continue
                due = t0 + app.index / self.options.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                # Sent the way an instrumented producer sends: under a span of its own,
                # whose traceparent the record carries (send_model injects it).
                with self._publish_span(EVENTS, app, None):
                    deliveries.append(
                        await send_model(producer, EVENTS, app.entity_id, app.raw_event())
                    )
                    event = otel_context.get_current()
                sent[app.index] = event
                if app.index == scenario.drift_at:
                    self.obs.drift_sent_s = self.obs.now()
                    self.obs.milestone(
                        "concept drift",
                        f"the rule changes from Agrawal function {scenario.function_before} "
                        f"to {scenario.function_after}",
                    )
                if app.index == scenario.return_at:
                    self.obs.return_sent_s = self.obs.now()
                    self.obs.milestone(
                        "concept returns",
                        f"the rule changes back to Agrawal function {scenario.function_before}",
                    )
                self.obs.events_sent += 1
                self.last_app = app
                if self.obs.current_champion is None:
                    self.obs.unscored += 1
                else:
                    await gate.acquire()
                    task = asyncio.create_task(guarded(app, event))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                while len(deliveries) > 5000:
                    await deliveries.popleft()
            if tasks:
                await asyncio.gather(*tasks)
            for fut in deliveries:
                await fut
        finally:
            await producer.stop()

    async def preflight(self, timeout_s: float = 180.0) -> float:
        """Send one probe application and wait until its features are readable online.

        Every scenario prediction reads the features its event produced a moment
        before. A pipeline that is not carrying events yet (a broker that refuses
        ``acks=all`` writes for a while after a start on a busy machine was seen
        to for a minute) would have them answered from missing features, which
        hides the drift the demo is about. So the scenario starts only once an
        event went through ingestion and the features worker to the online store.
        The probe is an entity of its own, never labelled nor predicted.
        Returns the seconds it took; :class:`InfraError` when it did not arrive.
        """
        first = next(step.application for step in schedule(self.scenario))
        probe = dataclasses.replace(
            first,
            event_id=f"{self.prefix}-probe",
            entity_id=f"{self.prefix}-probe",
            event_time=datetime.now(UTC),
        )
        feature = next(iter(probe.features))
        features = self.settings.serving.features_target
        read = feature_store_pb2.GetOnlineFeaturesRequest(
            featureset="loans", entity_ids=[probe.entity_id], feature_names=[feature]
        )
        started = time.monotonic()
        producer = make_producer(
            self.settings.kafka,
            f"demo-{self.run_id}-probe",
            security=kafka_auth(self.settings.security, "admin"),
        )
        await producer.start()
        try:
            await (await send_model(producer, EVENTS, probe.entity_id, probe.raw_event()))
        finally:
            await producer.stop()
        async with grpc_tls.channel(features, self.settings.security, "admin") as channel:
            stub: Any = feature_store_pb2_grpc.FeatureStoreStub(channel)
            while True:
                try:
                    answer = await stub.GetOnlineFeatures(read, timeout=5.0)
                    status = answer.features[0].status[0]
                    if status == common_pb2.FEATURE_STATUS_PRESENT:
                        return time.monotonic() - started
                except grpc.aio.AioRpcError:
                    pass  # the feature store is still starting: keep asking
                if time.monotonic() - started > timeout_s:
                    raise InfraError(
                        f"a probe event did not reach the online store within {timeout_s:.0f}s: "
                        "the pipeline (Kafka, ingestion, the features worker, Redis) is not "
                        "carrying events; see `driftline status` and the services' logs"
                    )
                await asyncio.sleep(0.2)

    async def run(self) -> None:
        """Stream, then wait (probing serving) until the loop closes or time runs out."""
        channel = grpc_tls.channel(self.target, self.settings.security, "admin")
        self._predictor = predictor_pb2_grpc.PredictorStub(channel)
        tracing = demo_tracing(self.settings)
        self.tracer = tracing.get_tracer("driftline.demo")
        watcher = asyncio.create_task(self.watch())
        deadline = time.monotonic() + self.options.timeout_s
        try:
            ready = asyncio.create_task(self.models_ready.wait())
            await asyncio.wait({ready, watcher}, timeout=60.0, return_when=FIRST_COMPLETED)
            if watcher.done():
                watcher.result()  # raises what stopped it
            if not ready.done():
                ready.cancel()
                raise InfraError(f"could not read {MODELS.name} within 60s (is Kafka answering?)")
            took = await self.preflight()
            self.obs.milestone(
                "pipeline carrying events",
                f"a probe event reached the online store {took:.1f}s after it was sent",
            )
            await asyncio.wait_for(self.stream(), timeout=max(1.0, deadline - time.monotonic()))
            obs = self.obs
            while time.monotonic() < deadline and obs.problems():
                if watcher.done():
                    break
                waiting_for_new = obs.new_champion is not None and obs.new_version_served_s is None
                if waiting_for_new and self.last_app is not None:
                    await self.predict(self.last_app, probe=True)
                if obs.failures:
                    break
                await asyncio.sleep(1.0)
            # let the prediction log catch up with what serving answered
            for _ in range(math.ceil(self.options.settle_s / 0.5)):
                if obs.logged_predictions >= len(obs.answers):
                    break
                await asyncio.sleep(0.5)
        finally:
            self.stop_watching.set()
            await watcher
            await channel.close(None)
            # Flushes the spans still queued (a blocking export: off the loop).
            await asyncio.to_thread(tracing.shutdown)
            self.tracer = trace.NoOpTracer()
