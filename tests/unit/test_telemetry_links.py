"""Span links and context helpers for Kafka hops and gRPC calls (no sockets)."""

from __future__ import annotations

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline.kafkaio import headers_from_context, traceparent_of
from driftline.settings import TelemetrySettings
from driftline.telemetry import (
    SpanContextMemo,
    configure_tracing,
    context_from_metadata,
    messaging_attributes,
    span_context_of,
)

pytestmark = pytest.mark.unit

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = configure_tracing(
        "test",
        TelemetrySettings(),
        extra_processors=[SimpleSpanProcessor(exporter)],
        install_global=False,
    )
    return provider, exporter


def test_a_detection_links_to_the_traces_of_the_records_behind_it() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    memo = SpanContextMemo(capacity=2)
    upstream = [f"00-{i:032x}-{i:016x}-01" for i in (1, 2, 3)]
    for tp in upstream:
        sc = span_context_of(tp)
        assert sc is not None
        memo.remember(tp.split("-")[1], sc)
    assert len(memo) == 2  # the oldest (trace 1) is forgotten
    with tracer.start_as_current_span(
        "driftline.drift publish",
        context=otel_context.Context(),
        links=memo.links([f"{i:032x}" for i in (1, 2, 3, 3)]),
    ) as span:
        own = span.get_span_context()
        headers = headers_from_context()
    (finished,) = exporter.get_finished_spans()
    linked = {(link.context.trace_id, link.context.span_id) for link in finished.links}
    assert linked == {(2, 2), (3, 3)}
    assert own.trace_id not in (1, 2, 3)  # a trace of its own …
    carried = traceparent_of(headers)
    assert carried is not None and carried.split("-")[1] == format(own.trace_id, "032x")


def test_span_context_of_a_traceparent() -> None:
    sc = span_context_of(TP)
    assert sc is not None and sc.is_remote
    assert format(sc.span_id, "016x") == "b7ad6b7169203331"
    assert span_context_of(None) is None
    assert span_context_of("00-00000000000000000000000000000000-b7ad6b7169203331-01") is None


def test_grpc_metadata_continues_the_callers_trace() -> None:
    provider, exporter = _provider()
    ctx = context_from_metadata([("authorization", "Bearer t"), ("traceparent", TP)])
    assert ctx is not None
    with provider.get_tracer("t").start_as_current_span("rpc", context=ctx):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is not None and format(span.parent.span_id, "016x") == "b7ad6b7169203331"
    assert context_from_metadata(None) is None
    assert context_from_metadata([("traceparent", b"binary-is-ignored")]) is None
    assert trace.get_current_span().get_span_context().is_valid is False


def test_messaging_attributes_follow_the_semantic_conventions() -> None:
    attrs = messaging_attributes("driftline.features", "process", partition=3, offset=9, key=b"k")
    assert attrs == {
        "messaging.system": "kafka",
        "messaging.destination.name": "driftline.features",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.partition.id": "3",
        "messaging.kafka.offset": 9,
        "messaging.kafka.message.key": "k",
    }
