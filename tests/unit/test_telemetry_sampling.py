"""Head sampling: records without a trace context start one at ``untraced_sample_ratio``.

The decisions are the SDK's (``ParentBased`` around ``TraceIdRatioBased``): a
ratio of 0 picks none, 1 picks all, a record that carries a context follows it
whatever the ratio, and the two root ratios do not bleed into each other.
"""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline.kafkaio import context_from_headers, headers_from_context, traceparent_of
from driftline.settings import TelemetrySettings
from driftline.telemetry import (
    HEAD_SAMPLED,
    RootSampler,
    configure_tracing,
    span_context_of,
    start_record_span,
)

pytestmark = pytest.mark.unit

RECORDS = 200
SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOT_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def _tracer(untraced: float, ratio: float = 1.0) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider: TracerProvider = configure_tracing(
        "test",
        TelemetrySettings(sample_ratio=ratio, untraced_sample_ratio=untraced),
        extra_processors=[SimpleSpanProcessor(exporter)],
        install_global=False,
    )
    return provider.get_tracer("t"), exporter


def _records(tracer: trace.Tracer, parent_traceparent: str | None) -> list[trace.Span | None]:
    parent = (
        None
        if parent_traceparent is None
        else context_from_headers([("traceparent", parent_traceparent.encode())])
    )
    spans = [start_record_span(tracer, "ingestion.validate", parent) for _ in range(RECORDS)]
    for span in spans:
        if span is not None:
            span.end()
    return spans


def test_ratio_zero_traces_no_untraced_record() -> None:
    tracer, exporter = _tracer(untraced=0.0)
    assert _records(tracer, None) == [None] * RECORDS
    assert exporter.get_finished_spans() == ()


def test_ratio_one_starts_a_trace_for_every_untraced_record() -> None:
    tracer, exporter = _tracer(untraced=1.0)
    spans = _records(tracer, None)
    assert all(span is not None and span.is_recording() is False for span in spans)  # ended
    finished: tuple[ReadableSpan, ...] = exporter.get_finished_spans()
    assert len(finished) == RECORDS
    assert all(s.parent is None for s in finished)  # each the root of a new trace …
    assert len({s.context.trace_id for s in finished}) == RECORDS  # … of its own
    assert all(s.attributes is not None and s.attributes[HEAD_SAMPLED] is True for s in finished)


def test_a_sampled_head_carries_its_traceparent_onward() -> None:
    tracer, _ = _tracer(untraced=1.0)
    span = start_record_span(tracer, "ingestion.validate", None)
    assert span is not None
    with trace.use_span(span, end_on_exit=True):
        headers = headers_from_context()
    carried = span_context_of(traceparent_of(headers))
    own = span.get_span_context()
    assert carried is not None and carried.trace_flags.sampled
    assert (carried.trace_id, carried.span_id) == (own.trace_id, own.span_id)


def test_a_record_with_a_sampled_context_follows_it_even_at_ratio_zero() -> None:
    tracer, exporter = _tracer(untraced=0.0, ratio=0.0)
    spans = _records(tracer, SAMPLED)
    assert all(span is not None for span in spans)
    finished = exporter.get_finished_spans()
    assert len(finished) == RECORDS
    for s in finished:
        assert s.parent is not None and f"{s.parent.span_id:016x}" == "b7ad6b7169203331"
        assert f"{s.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
        assert s.attributes is None or HEAD_SAMPLED not in s.attributes


def test_a_record_with_an_unsampled_context_follows_it_even_at_ratio_one() -> None:
    tracer, exporter = _tracer(untraced=1.0, ratio=1.0)
    spans = _records(tracer, NOT_SAMPLED)
    # A span is there (its context goes on, unsampled), but nothing is recorded.
    assert all(span is not None and not span.get_span_context().trace_flags.sampled
               for span in spans)  # fmt: skip
    assert exporter.get_finished_spans() == ()


def test_the_two_root_ratios_are_independent() -> None:
    tracer, exporter = _tracer(untraced=1.0, ratio=0.0)
    with tracer.start_as_current_span("Predict"):  # an ordinary new trace: not sampled
        pass
    assert exporter.get_finished_spans() == ()
    assert all(span is not None for span in _records(tracer, None))
    assert len(exporter.get_finished_spans()) == RECORDS

    tracer, exporter = _tracer(untraced=0.0, ratio=1.0)
    with tracer.start_as_current_span("Predict"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["Predict"]
    assert _records(tracer, None) == [None] * RECORDS


@pytest.mark.parametrize(
    ("trace_id", "head", "sampled"),
    [
        (2**62 - 1, True, True),  # under a quarter of the id space: picked at 0.25
        (2**62 + 1, True, False),
        (2**63, False, True),  # not a head: the other ratio (1.0) decides
    ],
)
def test_root_sampler_decides_by_trace_id(trace_id: int, head: bool, sampled: bool) -> None:
    sampler = RootSampler(1.0, 0.25)
    attributes = {HEAD_SAMPLED: True} if head else None
    result = sampler.should_sample(None, trace_id, "s", attributes=attributes)
    assert result.decision.is_sampled() is sampled


def test_the_untraced_ratio_is_a_ratio() -> None:
    assert TelemetrySettings().untraced_sample_ratio == 0.01
    with pytest.raises(ValueError, match="untraced_sample_ratio"):
        TelemetrySettings(untraced_sample_ratio=1.5)
