"""Errors become the gRPC status they name, with their message; every outcome is counted."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from driftline.contracts.errors import DriftlineError, NotFoundError, UnavailableError
from driftline.serving.rpc_observer import observed
from driftline.serving.serving_metrics import ServingMetrics
from driftline.telemetry import ServiceMetrics

pytestmark = pytest.mark.unit


class Aborted(Exception):
    pass


class FakeContext:
    """The parts of grpc.aio.ServicerContext the observer uses."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata = metadata
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise Aborted

    def code(self) -> None:
        return None


class Servicer:
    def __init__(self, error: Exception | None) -> None:
        self.metrics = ServingMetrics(ServiceMetrics("serving"))
        self.error = error

    @observed("driftline.v1.Predictor", "Predict")
    async def Predict(self, request: Any, context: Any) -> str:
        if self.error is not None:
            raise self.error
        return "answer"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFoundError("model 'x' is not served"), grpc.StatusCode.NOT_FOUND),
        (UnavailableError("no champion"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL),
    ],
)
async def test_errors_map_to_status_codes(error: Exception, code: grpc.StatusCode) -> None:
    servicer = Servicer(error)
    context = FakeContext()
    with pytest.raises(Aborted):
        await servicer.Predict(None, context)
    assert context.aborted is not None and context.aborted[0] == code
    if isinstance(error, DriftlineError):
        assert context.aborted[1] == error.message
    text = servicer.metrics.base.render().decode()
    assert f'driftline_serving_requests_total{{code="{code.name}",method="Predict"}} 1.0' in text


async def test_success_is_counted_and_timed() -> None:
    servicer = Servicer(None)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert await servicer.Predict(None, FakeContext((("traceparent", traceparent),))) == "answer"
    text = servicer.metrics.base.render().decode()
    assert 'driftline_request_latency_seconds_count{code="OK",method="Predict"} 1.0' in text


def traced(error: Exception | None) -> tuple[Any, InMemorySpanExporter]:
    """A servicer whose spans go to an in-memory exporter; it notes the span current in it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    class Traced(Servicer):
        current: Any = None

        @observed("driftline.v1.Predictor", "Predict", provider.get_tracer("test"))
        async def Predict(self, request: Any, context: Any) -> str:
            self.current = trace.get_current_span().get_span_context()
            if self.error is not None:
                raise self.error
            return "answer"

    return Traced(error), exporter


async def test_the_server_span_continues_the_callers_trace_and_is_current_in_the_handler() -> None:
    servicer, exporter = traced(None)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert await servicer.Predict(None, FakeContext((("traceparent", traceparent),))) == "answer"
    [span] = exporter.get_finished_spans()
    assert span.name == "driftline.v1.Predictor/Predict"
    assert span.kind == SpanKind.SERVER
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.parent is not None and span.parent.span_id == 0xB7AD6B7169203331
    assert servicer.current == span.context
    assert dict(span.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "driftline.v1.Predictor",
        "rpc.method": "Predict",
        "rpc.grpc.status_code": 0,
    }
    assert span.status.is_unset
    # The span is no longer current once the handler is done.
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.parametrize(
    ("error", "code", "failed"),
    [
        (NotFoundError("model 'x' is not served"), grpc.StatusCode.NOT_FOUND, False),
        (UnavailableError("no champion"), grpc.StatusCode.UNAVAILABLE, True),
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL, True),
    ],
)
async def test_the_server_span_carries_the_status(
    error: Exception, code: grpc.StatusCode, failed: bool
) -> None:
    servicer, exporter = traced(error)
    with pytest.raises(Aborted):
        await servicer.Predict(None, FakeContext())
    [span] = exporter.get_finished_spans()
    assert span.parent is None  # no traceparent sent: a trace of its own
    assert (span.attributes or {})["rpc.grpc.status_code"] == code.value[0]
    # The caller's mistakes leave a server span's status unset; the server's own fail it.
    assert span.status.status_code == (StatusCode.ERROR if failed else StatusCode.UNSET)
    # An unexpected error is recorded on the span; a DriftlineError is an answer.
    recorded = [e.attributes["exception.type"] for e in span.events if e.attributes]
    assert recorded == (["RuntimeError"] if isinstance(error, RuntimeError) else [])
    assert trace.get_current_span() is trace.INVALID_SPAN
