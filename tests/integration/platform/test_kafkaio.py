"""The contracts library against the real broker: provisioning and trace headers."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline.contracts.messages import RawEvent
from driftline.contracts.topics import ALL_TOPICS, EVENTS, MODELS
from driftline.kafkaio import (
    context_from_headers,
    make_consumer,
    make_producer,
    provision_topics,
    send_model,
    traceparent_of,
)
from driftline.settings import KafkaSettings, TelemetrySettings
from driftline.telemetry import configure_tracing


async def test_provisioning_is_idempotent_and_matches_the_declarations(kafka: Any) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers)
    await provision_topics(settings)
    assert await provision_topics(settings) == []  # second run creates nothing
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([t.name for t in ALL_TOPICS])
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, MODELS.name)]
        )
    finally:
        await admin.close()
    partitions = {d["topic"]: len(d["partitions"]) for d in described}
    assert partitions == {t.name: t.partitions for t in ALL_TOPICS}
    entries = {c[0]: c[1] for c in configs[0].resources[0][4]}
    assert entries["retention.ms"] == "-1"
    # The largest record a topic takes is the producers' max_request_size.
    assert entries["max.message.bytes"] == str(settings.max_message_bytes)


async def _ends(bootstrap: str) -> dict[TopicPartition, int]:
    """The end offset of every partition of ``driftline.events`` now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(EVENTS.name, p) for p in range(EVENTS.partitions)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _read_one(bootstrap: str, key: bytes, since: dict[TopicPartition, int]) -> Any:
    """The record keyed ``key`` written after ``since``.

    Only records after ``since`` are read: earlier tests leave hostile records on
    the shared topic, one of which (a header name that is not UTF-8) no aiokafka
    consumer can decode.
    """
    consumer = make_consumer(KafkaSettings(bootstrap_servers=bootstrap), "test", group_id=None)
    await consumer.start()
    try:
        consumer.assign(list(since))
        for tp, offset in since.items():
            consumer.seek(tp, offset)
        for _ in range(60):
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                for r in recs:
                    if r.key == key:
                        return r
    finally:
        await consumer.stop()
    raise AssertionError("record not found")


async def test_kcat_payload_and_traceparent_survive_the_consumer_helper(kafka: Any) -> None:
    await provision_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers))
    key = f"k-{uuid.uuid4().hex}".encode()
    payload = json.dumps(
        {
            "event_id": "e-1",
            "entity_id": "c-1",
            "timestamp": "2026-11-23T16:00:00Z",
            "features": {"salary": 72000.5, "name": "zoë"},
        },
        ensure_ascii=False,
    ).encode()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    since = await _ends(kafka.bootstrap_servers)
    subprocess.run(
        [
            "kcat",
            "-P",
            "-b",
            kafka.bootstrap_servers,
            "-t",
            EVENTS.name,
            "-k",
            key.decode(),
            "-H",
            f"traceparent={traceparent}",
        ],
        input=payload,
        check=True,
        timeout=30,
    )
    record = await _read_one(kafka.bootstrap_servers, key, since)
    assert record.value == payload
    assert traceparent_of(record.headers) == traceparent
    exporter = InMemorySpanExporter()
    provider = configure_tracing(
        "test",
        TelemetrySettings(),
        extra_processors=[SimpleSpanProcessor(exporter)],
        install_global=False,
    )
    with provider.get_tracer("t").start_as_current_span(
        "consume", context=context_from_headers(record.headers)
    ) as span:
        assert (
            format(span.get_span_context().trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
        )
    assert RawEvent.model_validate_json(record.value).features["name"] == "zoë"


async def test_send_model_writes_the_active_trace(kafka: Any) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers)
    await provision_topics(settings)
    provider = configure_tracing("test", TelemetrySettings(), install_global=False)
    producer = make_producer(settings, "test")
    await producer.start()
    key = f"k-{uuid.uuid4().hex}"
    event = RawEvent(event_id="e", entity_id=key, timestamp=1, features={"a": 1})  # type: ignore[arg-type]
    since = await _ends(kafka.bootstrap_servers)
    try:
        with otel_trace.use_span(
            provider.get_tracer("t").start_span("produce"), end_on_exit=True
        ) as span:
            fut = await send_model(producer, EVENTS, key, event)
            await fut
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        await producer.stop()
    record = await _read_one(kafka.bootstrap_servers, key.encode(), since)
    tp = traceparent_of(record.headers)
    assert tp is not None and tp.split("-")[1] == trace_id
    assert RawEvent.model_validate_json(record.value) == event
