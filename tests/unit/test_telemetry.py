from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline.kafkaio import context_from_headers, headers_from_context, traceparent_of
from driftline.runtime import Health
from driftline.settings import TelemetrySettings
from driftline.telemetry import JsonFormatter, configure_tracing


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = configure_tracing(
        "test",
        TelemetrySettings(),
        extra_processors=[SimpleSpanProcessor(exporter)],
        install_global=False,
    )
    return provider, exporter


def test_traceparent_round_trips_through_headers() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("produce") as span:
        headers = headers_from_context()
        trace_id = span.get_span_context().trace_id
    tp = traceparent_of(headers)
    assert tp is not None and tp.split("-")[1] == format(trace_id, "032x")
    with tracer.start_as_current_span("consume", context=context_from_headers(headers)) as child:
        assert child.get_span_context().trace_id == trace_id
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["consume"].parent is not None
    assert spans["consume"].parent.span_id == spans["produce"].context.span_id


def test_no_active_trace_means_no_header() -> None:
    assert headers_from_context() == []


def test_malformed_headers_do_not_raise() -> None:
    ctx = context_from_headers([("traceparent", b"\xff\xfe"), ("other", b"x")])
    assert traceparent_of([("traceparent", b"\xff\xfe")]) is None
    assert ctx is not None


def test_json_logs_carry_the_trace_id() -> None:
    provider, _ = _provider()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.entity_id = "c-1"
    with provider.get_tracer("t").start_as_current_span("s") as span:
        line = json.loads(JsonFormatter("svc").format(record))
    assert line["msg"] == "hello you"
    assert line["service"] == "svc"
    assert line["entity_id"] == "c-1"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_health_is_ready_only_when_every_condition_holds() -> None:
    h = Health("x")
    assert not h.ready
    h.set("kafka", True)
    h.set("model", False)
    assert not h.ready
    h.set("model", True)
    assert h.ready
