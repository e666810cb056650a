"""The shared gRPC edge: every server's wrapper, the client's status mapping, scalar <-> Value.

Servicers here record into serving's metrics (the wrapper's first user), so the
series names asserted are the ones serving exposes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from driftline.contracts import errors as err
from driftline.edge.errors import RpcErrors, status_code_of
from driftline.edge.server import RpcFailed, ServerEdge
from driftline.edge.values import set_value, value_from_pb, value_to_pb, values_from_pb
from driftline.serving.serving_metrics import ServingMetrics
from driftline.telemetry import ServiceMetrics, context_from_metadata
from driftline.v1 import common_pb2

pytestmark = pytest.mark.unit

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
EDGE = ServerEdge("driftline.v1.Predictor", trace.get_tracer("test"), component="serving")


class Aborted(Exception):
    pass


class FakeContext:
    """The parts of grpc.aio.ServicerContext the edge uses."""

    def __init__(
        self, metadata: tuple[tuple[str, str], ...] = (), remaining: float | None = None
    ) -> None:
        self.metadata = metadata
        self.remaining = remaining
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise Aborted

    def code(self) -> grpc.StatusCode | None:
        return self.aborted[0] if self.aborted else None


class Servicer:
    def __init__(self, error: Exception | None) -> None:
        self.metrics = ServingMetrics(ServiceMetrics("serving"))
        self.record_rpc = self.metrics.observe
        self.error = error
        self.ran = 0

    @EDGE.unary("Predict")
    async def Predict(self, request: Any, context: Any) -> str:
        self.ran += 1
        if self.error is not None:
            raise self.error
        return "answer"

    def text(self) -> str:
        return self.metrics.base.render().decode()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (err.NotFoundError("model 'x' is not served"), grpc.StatusCode.NOT_FOUND),
        (err.UnavailableError("no champion"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL),
    ],
)
async def test_errors_map_to_status_codes(error: Exception, code: grpc.StatusCode) -> None:
    servicer = Servicer(error)
    context = FakeContext()
    with pytest.raises(Aborted):
        await servicer.Predict(None, context)
    assert context.aborted is not None and context.aborted[0] == code
    if isinstance(error, err.DriftlineError):
        assert context.aborted[1] == error.message
    else:
        assert "RuntimeError: boom" in context.aborted[1] and "logged" in context.aborted[1]
    text = servicer.text()
    assert f'driftline_serving_requests_total{{code="{code.name}",method="Predict"}} 1.0' in text


async def test_success_is_counted_and_timed() -> None:
    servicer = Servicer(None)
    assert await servicer.Predict(None, FakeContext((("traceparent", TRACEPARENT),))) == "answer"
    text = servicer.text()
    assert 'driftline_request_latency_seconds_count{code="OK",method="Predict"} 1.0' in text


@pytest.mark.parametrize("remaining", [0.0, -0.5])
async def test_a_call_whose_deadline_has_passed_is_refused_before_the_handler(
    remaining: float,
) -> None:
    servicer = Servicer(None)
    context = FakeContext(remaining=remaining)
    with pytest.raises(Aborted):
        await servicer.Predict(None, context)
    assert servicer.ran == 0
    assert context.aborted is not None
    assert context.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "Predict" in context.aborted[1] and "nothing was done" in context.aborted[1]
    assert 'requests_total{code="DEADLINE_EXCEEDED",method="Predict"} 1.0' in servicer.text()
    # Time left, or no deadline at all: served.
    assert await servicer.Predict(None, FakeContext(remaining=0.01)) == "answer"
    assert await servicer.Predict(None, FakeContext(remaining=None)) == "answer"


async def test_a_handler_that_aborts_itself_is_counted_with_its_status() -> None:
    class Aborting(Servicer):
        @EDGE.unary("SetCanary")
        async def SetCanary(self, request: Any, context: Any) -> str:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many")
            return "unreachable"

    class GrpcAbort(FakeContext):
        async def abort(self, code: grpc.StatusCode, details: str) -> None:
            self.aborted = (code, details)
            raise grpc.aio.AbortError()

    servicer, context = Aborting(None), GrpcAbort()
    with pytest.raises(grpc.aio.AbortError):
        await servicer.SetCanary(None, context)
    assert context.aborted == (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many")
    assert 'requests_total{code="RESOURCE_EXHAUSTED",method="SetCanary"} 1.0' in servicer.text()


class Guarded(Servicer):
    """Changes need ``authorization: Bearer ok``; the hook is told which method is called."""

    asked: list[str]

    def authorize(self, method: str, context: Any) -> None:
        self.asked.append(method)
        if ("authorization", "Bearer ok") not in context.invocation_metadata():
            raise err.UnauthenticatedError("send 'authorization: Bearer <token>'")

    @EDGE.unary("SetCanary", guarded=True)
    async def SetCanary(self, request: Any, context: Any) -> str:
        self.ran += 1
        return "moved"


async def test_guarded_methods_pass_the_servicers_authorize_hook_first() -> None:
    servicer = Guarded(None)
    servicer.asked = []
    context = FakeContext((("authorization", "Bearer no"),))
    with pytest.raises(Aborted):
        await servicer.SetCanary(None, context)
    assert context.aborted is not None
    assert context.aborted == (
        grpc.StatusCode.UNAUTHENTICATED,
        "send 'authorization: Bearer <token>'",
    )
    assert servicer.ran == 0
    assert await servicer.SetCanary(None, FakeContext((("authorization", "Bearer ok"),))) == "moved"
    # Unguarded methods never ask.
    assert await servicer.Predict(None, FakeContext()) == "answer"
    assert servicer.asked == ["SetCanary", "SetCanary"]
    # An expired call is refused before anyone is asked.
    with pytest.raises(Aborted):
        await servicer.SetCanary(None, FakeContext((("authorization", "Bearer ok"),), 0.0))
    assert servicer.asked == ["SetCanary", "SetCanary"]


def traced() -> tuple[ServerEdge, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return (
        ServerEdge("driftline.v1.Predictor", provider.get_tracer("test"), component="serving"),
        exporter,
    )


def traced_servicer(error: Exception | None) -> tuple[Any, InMemorySpanExporter]:
    """A servicer whose spans go to an in-memory exporter; it notes the span current in it."""
    edge, exporter = traced()

    class Traced(Servicer):
        current: Any = None

        @edge.unary("Predict")
        async def Predict(self, request: Any, context: Any) -> str:
            self.current = trace.get_current_span().get_span_context()
            if self.error is not None:
                raise self.error
            return "answer"

    return Traced(error), exporter


async def test_the_server_span_continues_the_callers_trace_and_is_current_in_the_handler() -> None:
    servicer, exporter = traced_servicer(None)
    assert await servicer.Predict(None, FakeContext((("traceparent", TRACEPARENT),))) == "answer"
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
        (err.NotFoundError("model 'x' is not served"), grpc.StatusCode.NOT_FOUND, False),
        (err.UnavailableError("no champion"), grpc.StatusCode.UNAVAILABLE, True),
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL, True),
    ],
)
async def test_the_server_span_carries_the_status(
    error: Exception, code: grpc.StatusCode, failed: bool
) -> None:
    servicer, exporter = traced_servicer(error)
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


async def test_a_server_stream_is_one_span_and_ends_with_its_failures_status() -> None:
    edge, exporter = traced()

    class Streaming(Servicer):
        @edge.server_stream("Download")
        async def Download(self, request: int, context: Any) -> AsyncIterator[int]:
            for i in range(request):
                yield i
            if self.error is not None:
                raise self.error

    ok = Streaming(None)
    context = FakeContext((("traceparent", TRACEPARENT),))
    assert [i async for i in ok.Download(3, context)] == [0, 1, 2]
    failing = Streaming(err.NotFoundError("no version 7"))
    got: list[int] = []
    context = FakeContext()
    with pytest.raises(Aborted):
        async for i in failing.Download(2, context):
            got.append(i)
    assert got == [0, 1]
    assert context.aborted == (grpc.StatusCode.NOT_FOUND, "no version 7")
    expired = FakeContext(remaining=0.0)
    with pytest.raises(Aborted):
        [i async for i in ok.Download(3, expired)]
    assert expired.aborted is not None
    assert expired.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    spans = exporter.get_finished_spans()
    assert [(s.attributes or {})["rpc.grpc.status_code"] for s in spans] == [0, 5, 4]
    assert spans[0].context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    text = ok.text() + failing.text()
    for code in ("OK", "DEADLINE_EXCEEDED"):
        assert f'requests_total{{code="{code}",method="Download"}} 1.0' in ok.text()
    assert 'requests_total{code="NOT_FOUND",method="Download"} 1.0' in text
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_each_message_of_a_stream_gets_its_span_status_and_count() -> None:
    edge, exporter = traced()
    reads = edge.messages("StreamReads")
    servicer = Servicer(None)

    async def read(key: str) -> str:
        if key == "unknown":
            raise err.NotFoundError("no feature set 'unknown'")
        if key == "bug":
            raise KeyError(key)
        return key.upper()

    parent = context_from_metadata([("traceparent", TRACEPARENT)])
    assert await reads.answer(servicer, parent, read, "loans") == "LOANS"
    with pytest.raises(RpcFailed) as failed:
        await reads.answer(servicer, None, read, "unknown")
    assert (failed.value.code, failed.value.message) == ("NOT_FOUND", "no feature set 'unknown'")
    with pytest.raises(KeyError):  # the stream answers it (INTERNAL) and goes on
        await reads.answer(servicer, None, read, "bug")
    first, second, third = exporter.get_finished_spans()
    assert first.parent is not None and first.parent.span_id == 0xB7AD6B7169203331
    assert [(s.attributes or {})["rpc.grpc.status_code"] for s in (first, second, third)] == [
        0,
        5,
        13,
    ]
    text = servicer.text()
    for code in ("OK", "NOT_FOUND", "INTERNAL"):
        assert f'requests_total{{code="{code}",method="StreamReads"}} 1.0' in text


def test_an_error_naming_no_grpc_status_is_internal() -> None:
    class Odd(err.DriftlineError):
        grpc_code = "NOT_A_STATUS"

    assert status_code_of(Odd("x")) == grpc.StatusCode.INTERNAL
    assert status_code_of(err.IntegrityError("tampered")) == grpc.StatusCode.DATA_LOSS


# -- the client side -----------------------------------------------------------------

S = grpc.StatusCode


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (S.INVALID_ARGUMENT, err.InvalidArgumentError),
        (S.NOT_FOUND, err.NotFoundError),
        (S.ALREADY_EXISTS, err.AlreadyExistsError),
        (S.FAILED_PRECONDITION, err.FailedPreconditionError),
        (S.UNAUTHENTICATED, err.UnauthenticatedError),
        (S.PERMISSION_DENIED, err.PermissionDeniedError),
        (S.DATA_LOSS, err.IntegrityError),
    ],
)
def test_the_servers_answers_about_the_request_come_back_as_the_same_error(
    code: grpc.StatusCode, error: type[err.DriftlineError]
) -> None:
    refused = RpcErrors("registry", "10.0.0.1:50052").of_status(code, "what was wrong")
    assert type(refused) is error
    assert refused.message == "registry: what was wrong"
    # ... which a server answers with the same status again.
    assert status_code_of(refused) == code


def test_the_servers_own_failures_name_it_and_its_address() -> None:
    errors = RpcErrors("feature store", "10.0.0.2:50051")
    down = errors.of_status(S.UNAVAILABLE, "connection refused", doing="reading loans")
    assert type(down) is err.UnavailableError
    assert down.message == (
        "feature store at 10.0.0.2:50051 is unavailable reading loans: connection refused"
    )
    slow = errors.of_status(S.DEADLINE_EXCEEDED, "Deadline Exceeded", timeout_s=0.2)
    assert type(slow) is err.DeadlineExceededError
    assert slow.message == "feature store at 10.0.0.2:50051 did not answer within 200 ms"
    assert "did not answer in time" in errors.of_status(S.DEADLINE_EXCEEDED, None).message
    # A dependency's other failures are retried (UnavailableError) unless the client says
    # asking again cannot help.
    broken = errors.of_status(S.INTERNAL, "bug")
    assert type(broken) is err.UnavailableError and "failed (INTERNAL): bug" in broken.message
    final = RpcErrors("registry", "r:1", server_failure=err.DriftlineError)
    unimplemented = final.of_status(S.UNIMPLEMENTED, None)
    assert type(unimplemented) is err.DriftlineError and not unimplemented.retriable
    assert unimplemented.message == "registry at r:1 failed (UNIMPLEMENTED): UNIMPLEMENTED"


def test_a_client_may_narrow_what_counts_as_a_refusal() -> None:
    errors = RpcErrors(
        "feature store", "fs:1", refusals={S.INVALID_ARGUMENT: err.FailedPreconditionError}
    )
    assert (
        type(errors.of_status(S.INVALID_ARGUMENT, "no feature 'x'")) is err.FailedPreconditionError
    )
    assert type(errors.of_status(S.UNAUTHENTICATED, "who?")) is err.UnavailableError


# -- values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "back"),
    [
        (2.5, "double_value", 2.5),
        (41, "int64_value", 41),
        (True, "bool_value", True),
        (False, "bool_value", False),
        ("sedan", "string_value", "sedan"),
        (None, None, None),
        (np.float64(0.5), "double_value", 0.5),
        (2**62, "int64_value", 2**62),
    ],
)
def test_scalars_travel_as_values_and_back(value: Any, kind: str | None, back: Any) -> None:
    pb = value_to_pb(value)
    assert pb.WhichOneof("kind") == kind
    assert value_from_pb(pb) == back and type(value_from_pb(pb)) is type(back)
    target = common_pb2.Value()
    set_value(target, value)
    assert target == pb


def test_a_map_of_values_reads_back_as_scalars() -> None:
    pb = {"age": common_pb2.Value(int64_value=41), "gone": common_pb2.Value()}
    assert values_from_pb(pb) == {"age": 41, "gone": None}
