"""Errors become the gRPC status they name, with their message; every outcome is counted."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

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
