"""The registry refuses work whose caller's deadline has already passed, and changes
without the token; its reads stay open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from driftline.registry.core import Registration
from driftline.registry.grpc_api import RegistryServicer
from driftline.telemetry import ServiceMetrics
from driftline.v1 import registry_pb2

from .test_state import LoopbackLog, make_core

pytestmark = pytest.mark.unit


class _Aborted(Exception):
    pass


class _Context:
    """The parts of ``grpc.aio.ServicerContext`` the edge uses."""

    def __init__(self, remaining: float | None, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.remaining = remaining
        self.metadata = metadata
        self.status: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise _Aborted


async def _servicer(tmp_path: Path, token: str | None = None) -> tuple[RegistryServicer, Any]:
    log = LoopbackLog()
    core = make_core(tmp_path, log)
    await core.register(Registration(name="loans"), b"v1")
    return RegistryServicer(core, ServiceMetrics("registry"), token=token), log


def _set_alias() -> registry_pb2.SetAliasRequest:
    return registry_pb2.SetAliasRequest(name="loans", alias="shadow", version=1)


@pytest.mark.parametrize("remaining", [0.0, -0.5])
async def test_expired_requests_do_nothing(tmp_path: Path, remaining: float) -> None:
    servicer, log = await _servicer(tmp_path)
    events = len(log.events)
    context = _Context(remaining)
    ctx: Any = context
    with pytest.raises(_Aborted):
        await servicer.SetAlias(_set_alias(), ctx)
    assert len(log.events) == events
    assert context.status is not None
    assert context.status[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "nothing was done" in context.status[1]
    text = servicer.metrics.render().decode()
    assert (
        'driftline_request_latency_seconds_count{code="DEADLINE_EXCEEDED",method="SetAlias"} 1.0'
        in text
    )


@pytest.mark.parametrize("remaining", [None, 0.25])
async def test_requests_with_time_left_are_served(tmp_path: Path, remaining: float | None) -> None:
    servicer, _ = await _servicer(tmp_path)
    context = _Context(remaining)
    ctx: Any = context
    answer = await servicer.SetAlias(_set_alias(), ctx)
    assert answer.change.alias == "shadow" and answer.model_version.version == 1
    assert context.status is None


async def test_changes_need_the_token_and_reads_do_not(tmp_path: Path) -> None:
    servicer, log = await _servicer(tmp_path, token="s3cret")
    events = len(log.events)
    refused = _Context(None, (("authorization", "Bearer wrong"),))
    ctx: Any = refused
    with pytest.raises(_Aborted):
        await servicer.SetAlias(_set_alias(), ctx)
    assert refused.status is not None and refused.status[0] == grpc.StatusCode.UNAUTHENTICATED
    assert len(log.events) == events
    anyone: Any = _Context(None)
    models = await servicer.ListModels(registry_pb2.ListModelsRequest(), anyone)
    assert [m.name for m in models.models] == ["loans"]
    allowed: Any = _Context(None, (("authorization", "Bearer s3cret"),))
    assert (await servicer.SetAlias(_set_alias(), allowed)).change.alias == "shadow"
