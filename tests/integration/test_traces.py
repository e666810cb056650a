"""One trace per event across the real services, received over OTLP/gRPC.

Ingestion, features, the registry and serving run as their own processes against
the harness's Kafka and Redis, each exporting spans to an OTLP/gRPC receiver run
in this test (``TraceService/Export`` over ``grpc.aio``).  One event is POSTed
with a known ``traceparent``; its feature vector is awaited on
``driftline.features``; serving is asked for its prediction with the same
``traceparent``.  Every hop must land in that one trace with the right parent.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from river import tree
from river.datasets import synth
from support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver

from driftline.contracts.messages import FeatureVector, prediction_records
from driftline.contracts.topics import EVENTS, EVENTS_VALID, FEATURES, PREDICTIONS, Topic
from driftline.devtools.infra import free_port
from driftline.kafkaio import provision_topics, traceparent_of
from driftline.registry_client import RegistryClient
from driftline.settings import KafkaSettings
from driftline.telemetry import HEAD_SAMPLED, span_context_of
from driftline.v1 import predictor_pb2, predictor_pb2_grpc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SIGNING_KEY = "trace-test-signing-key"
FEATURES_OF_MODEL = [
    "salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan",
]  # fmt: skip


# -- the OTLP receiver -----------------------------------------------------------------


@pytest.fixture
async def otlp() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    async with otlp_receiver() as received:
        yield received


# -- the services ---------------------------------------------------------------------


@dataclass
class Stack:
    """Ports of the running services."""

    ingestion_http: str
    registry_grpc: str
    serving_grpc: str
    serving_admin: str
    procs: dict[str, subprocess.Popen[bytes]]
    logs: Path

    def log_text(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{(self.logs / f'{name}.log').read_text(errors='replace')[-4000:]}"
            for name in self.procs
        )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited ({proc.returncode}):\n{self.log_text()}"


async def _wait(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, stack: Stack
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        stack.check_alive()
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{stack.log_text()}")
        await asyncio.sleep(0.2)


async def _status(http: httpx.AsyncClient, url: str) -> int:
    try:
        return (await http.get(url, timeout=2)).status_code
    except httpx.HTTPError:
        return 0


@pytest.fixture
async def stack(
    kafka: Any, redis_server: Any, otlp: tuple[OtlpReceiver, str], tmp_path: Path
) -> AsyncIterator[Stack]:
    await provision_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers))
    ports = {
        name: free_port()
        for name in (
            "ingestion_admin",
            "features_admin",
            "features_grpc",
            "registry_admin",
            "registry_grpc",
            "serving_admin",
            "serving_grpc",
        )
    }
    if len(set(ports.values())) != len(ports):  # free_port may hand out a port twice
        ports = dict(zip(ports, (free_port() for _ in ports), strict=True))
    common = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE_", "OTEL_"))}
    common.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DRIFTLINE_KAFKA__STARTUP_WAIT_S="60",
        DRIFTLINE_REDIS__HOST=redis_server.host,
        DRIFTLINE_REDIS__PORT=str(redis_server.port),
        DRIFTLINE_INFRA__STATE_DIR=str(tmp_path / "state"),
        DRIFTLINE_TELEMETRY__OTLP_ENDPOINT=otlp[1],
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
        DRIFTLINE_REGISTRY__SIGNING_KEY=SIGNING_KEY,
        DRIFTLINE_REGISTRY__GRPC_PORT=str(ports["registry_grpc"]),
        DRIFTLINE_REGISTRY__ADMIN__PORT=str(ports["registry_admin"]),
        DRIFTLINE_REGISTRY__ARTIFACT_DIR=str(tmp_path / "artifacts"),
        DRIFTLINE_REGISTRY__INSTANCE_ID=uuid.uuid4().hex[:8],
        DRIFTLINE_INGESTION__ADMIN__PORT=str(ports["ingestion_admin"]),
        DRIFTLINE_FEATURES__ADMIN__PORT=str(ports["features_admin"]),
        DRIFTLINE_FEATURES__GRPC_PORT=str(ports["features_grpc"]),
        DRIFTLINE_SERVING__ADMIN__PORT=str(ports["serving_admin"]),
        DRIFTLINE_SERVING__GRPC_PORT=str(ports["serving_grpc"]),
        DRIFTLINE_SERVING__FEATURES_TARGET=f"127.0.0.1:{ports['features_grpc']}",
        DRIFTLINE_SERVING__REGISTRY_TARGET=f"127.0.0.1:{ports['registry_grpc']}",
        # Every record that arrives without a trace context starts one (head sampling).
        DRIFTLINE_TELEMETRY__UNTRACED_SAMPLE_RATIO="1",
        # Spans leave each process within a fraction of a second.
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("registry", "ingestion", "features", "serving"):
        out = (logs / f"{name}.log").open("wb")
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"driftline.{name}"],
            env=common,
            stdout=out,
            stderr=out,
            cwd=ROOT,
        )
        out.close()
    running = Stack(
        ingestion_http=f"http://127.0.0.1:{ports['ingestion_admin']}",
        registry_grpc=f"127.0.0.1:{ports['registry_grpc']}",
        serving_grpc=f"127.0.0.1:{ports['serving_grpc']}",
        serving_admin=f"http://127.0.0.1:{ports['serving_admin']}",
        procs=procs,
        logs=logs,
    )
    try:
        async with httpx.AsyncClient() as http:
            for name in ("registry", "ingestion", "features"):
                url = f"http://127.0.0.1:{ports[f'{name}_admin']}/readyz"

                async def ready(url: str = url) -> bool:
                    return await _status(http, url) == 200

                # Generous: the shared 2-core machine imports River and Faust slowly.
                await _wait(ready, 180, f"{name} to be ready", running)
        yield running
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- helpers ----------------------------------------------------------------------------


async def _tail(bootstrap: str, topic: Topic) -> AIOKafkaConsumer:
    """A consumer positioned at the current end of every partition of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)  # resolve the end offsets now, before anything is sent
    return consumer


async def _record_where(
    consumer: AIOKafkaConsumer, match: Callable[[bytes], bool], timeout: float, stack: Stack
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        stack.check_alive()
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            for record in records:
                if match(record.value):
                    return record
    raise AssertionError(f"no matching record within {timeout}s\n{stack.log_text()}")


def _new_event(seed: int) -> dict[str, Any]:
    """A raw loan application of a new entity, stamped now."""
    x, _ = next(iter(synth.Agrawal(seed=seed).take(1)))
    return {
        "event_id": f"e-{uuid.uuid4().hex[:12]}",
        "entity_id": f"customer-{uuid.uuid4().hex[:6]}",
        "timestamp": datetime.now(UTC).isoformat(),
        "featureset": "loans",
        "features": x,
    }


def _trained_tree() -> Any:
    model: Any = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in synth.Agrawal(seed=3).take(500):
        model.learn_one(x, y)
    return model


# -- the test -------------------------------------------------------------------------


async def test_one_trace_crosses_ingestion_features_and_serving(
    stack: Stack, otlp: tuple[OtlpReceiver, str], kafka: Any
) -> None:
    receiver = otlp[0]
    model = f"trace-loans-{uuid.uuid4().hex[:8]}"
    async with RegistryClient(stack.registry_grpc, timeout_s=30) as registry:
        info = await registry.register(
            model,
            model=_trained_tree(),
            spec={
                "name": model,
                "featureset": "loans",
                "task": "binary",
                "features": FEATURES_OF_MODEL,
            },
            actor="test",
        )
        await registry.set_alias(model, "champion", info.version, actor="test", reason="traces")

    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = f"00-{trace_id}-{client_span}-01"
    event = _new_event(seed=9)
    event_id, entity = event["event_id"], event["entity_id"]
    features_log = await _tail(kafka.bootstrap_servers, FEATURES)
    predictions_log = await _tail(kafka.bootstrap_servers, PREDICTIONS)
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                f"{stack.ingestion_http}/v1/events",
                json=event,
                headers={"traceparent": traceparent},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] == 1

            vector_record = await _record_where(
                features_log,
                lambda v: FeatureVector.model_validate_json(v).event_id == event_id,
                120,
                stack,
            )

            async def serving_ready() -> bool:
                return await _status(http, f"{stack.serving_admin}/readyz") == 200

            await _wait(serving_ready, 120, "serving to load the champion", stack)

        async with grpc.aio.insecure_channel(stack.serving_grpc) as channel:
            reply = await predictor_pb2_grpc.PredictorStub(channel).Predict(
                predictor_pb2.PredictRequest(entity_id=entity, event_id=event_id, model_name=model),
                metadata=(("traceparent", traceparent),),
                timeout=30,
            )
        assert reply.model_version == info.version
        prediction_record = await _record_where(
            predictions_log,
            lambda v: any(r.request_id == reply.request_id for r in prediction_records(v)),
            60,
            stack,
        )
    finally:
        await features_log.stop()
        await predictions_log.stop()

    LOOKUP = "driftline.v1.FeatureStore/StreamOnlineFeatures"  # serving reads on a stream

    def server_span(service: str, name: str) -> ReceivedSpan | None:
        found = [
            s
            for s in receiver.in_trace(trace_id)
            if s.service == service and s.span.name == name and s.span.kind == Span.SPAN_KIND_SERVER
        ]
        assert len(found) <= 1, f"{len(found)} server spans {service}:{name} in the trace"
        return found[0] if found else None

    async def all_spans_arrived() -> bool:
        return (
            server_span("ingestion", "POST /v1/events") is not None
            and receiver.one(trace_id, "features", f"{EVENTS_VALID.name} process") is not None
            and server_span("serving", "driftline.v1.Predictor/Predict") is not None
            and server_span("features", LOOKUP) is not None
        )

    await _wait(all_spans_arrived, 60, f"the spans of trace {trace_id}", stack)

    ingest = server_span("ingestion", "POST /v1/events")
    process = receiver.one(trace_id, "features", f"{EVENTS_VALID.name} process")
    predict = server_span("serving", "driftline.v1.Predictor/Predict")
    lookup = server_span("features", LOOKUP)
    assert ingest and process and predict and lookup
    by_id = {s.span_id: s for s in receiver.in_trace(trace_id)}

    def ancestors(span: ReceivedSpan) -> list[str]:
        """Span ids from ``span``'s parent up to the first one not received (the client's)."""
        chain = [span.parent_id]
        while chain[-1] in by_id:
            chain.append(by_id[chain[-1]].parent_id)
        return chain

    # ingestion continues the client's span (its HTTP server span is the client's child) …
    assert ingest.parent_id == client_span
    # … and features continues ingestion's: the event's process span descends, through
    # ingestion's spans only, from ingestion's server span.
    assert process.span.kind == Span.SPAN_KIND_CONSUMER
    chain = ancestors(process)
    assert chain[-1] == client_span
    assert ingest.span_id in chain
    assert {by_id[i].service for i in chain[:-1]} == {"ingestion"}
    assert process.attribute("messaging.system") == "kafka"
    assert process.attribute("messaging.destination.name") == EVENTS_VALID.name
    # The vector on driftline.features carries the features span on.
    assert traceparent_of(vector_record.headers) == f"00-{trace_id}-{process.span_id}-01"

    # serving continues the client's trace from the gRPC metadata …
    assert predict.parent_id == client_span
    assert predict.attribute("rpc.system") == "grpc"
    assert predict.attribute("rpc.service") == "driftline.v1.Predictor"
    assert predict.attribute("rpc.method") == "Predict"
    # … the feature store's lookup (a read on serving's feature stream, which
    # carries the read's trace context in the message) is its child, and the
    # prediction record carries it.
    assert lookup.parent_id == predict.span_id
    assert lookup.attribute("rpc.method") == "StreamOnlineFeatures"
    assert traceparent_of(prediction_record.headers) == f"00-{trace_id}-{predict.span_id}-01"

    services = {s.service for s in receiver.in_trace(trace_id)}
    assert {"ingestion", "features", "serving"} <= services


async def test_an_untraced_kafka_event_starts_a_trace_that_features_continue(
    stack: Stack, otlp: tuple[OtlpReceiver, str], kafka: Any
) -> None:
    """Head sampling: an event produced with no ``traceparent`` (an uninstrumented
    producer) starts a trace at ingestion (``untraced_sample_ratio`` is 1 here), which
    its valid record carries to features and its vector on to ``driftline.features``."""
    receiver = otlp[0]
    event = _new_event(seed=11)
    event_id, entity = event["event_id"], event["entity_id"]
    features_log = await _tail(kafka.bootstrap_servers, FEATURES)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(EVENTS.name, json.dumps(event).encode(), key=entity.encode())
        vector_record = await _record_where(
            features_log,
            lambda v: FeatureVector.model_validate_json(v).event_id == event_id,
            120,
            stack,
        )
    finally:
        await producer.stop()
        await features_log.stop()
    carried = span_context_of(traceparent_of(vector_record.headers))
    assert carried is not None, "the vector of a head-sampled event carries no traceparent"
    trace_id = f"{carried.trace_id:032x}"

    async def both_arrived() -> bool:
        return (
            receiver.one(trace_id, "ingestion", "ingestion.validate") is not None
            and receiver.one(trace_id, "features", f"{EVENTS_VALID.name} process") is not None
        )

    await _wait(both_arrived, 60, f"the spans of trace {trace_id}", stack)
    validate = receiver.one(trace_id, "ingestion", "ingestion.validate")
    process = receiver.one(trace_id, "features", f"{EVENTS_VALID.name} process")
    assert validate is not None and process is not None
    # ingestion's span is the root of the trace, started by head sampling …
    assert validate.parent_id == ""
    assert validate.attribute(HEAD_SAMPLED) is True
    assert validate.attribute("messaging.destination.name") == EVENTS_VALID.name
    # … features continues it, and its vector carries the features span on.
    assert process.parent_id == validate.span_id
    assert f"{carried.span_id:016x}" == process.span_id
