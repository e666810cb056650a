"""The registry refuses work whose caller's deadline has already passed."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from driftline.registry.grpc_api import _rpc
from driftline.telemetry import ServiceMetrics

pytestmark = pytest.mark.unit


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining
        self.status: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise _Aborted


class _Servicer:
    def __init__(self) -> None:
        self.metrics = ServiceMetrics("registry")
        self.done: list[str] = []

    def authorize(self, context: Any) -> None:
        pass

    @_rpc("SetAlias", mutating=True)
    async def SetAlias(self, request: str, context: Any) -> str:
        self.done.append(request)
        return "moved"


@pytest.mark.parametrize("remaining", [0.0, -0.5])
async def test_expired_requests_do_nothing(remaining: float) -> None:
    servicer, context = _Servicer(), _Context(remaining)
    ctx: Any = context
    with pytest.raises(_Aborted):
        await servicer.SetAlias("shadow -> v1", ctx)
    assert servicer.done == []
    assert context.status is not None
    assert context.status[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "nothing was done" in context.status[1]


@pytest.mark.parametrize("remaining", [None, 0.25])
async def test_requests_with_time_left_are_served(remaining: float | None) -> None:
    servicer, context = _Servicer(), _Context(remaining)
    ctx: Any = context
    assert await servicer.SetAlias("shadow -> v1", ctx) == "moved"
    assert servicer.done == ["shadow -> v1"] and context.status is None
