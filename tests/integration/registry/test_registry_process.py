"""``python -m driftline.registry`` as a process: admin endpoints, gRPC health, Kafka down."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from support.otlp import ReceivedSpan, otlp_receiver

from driftline.devtools.infra import free_port
from driftline.registry_client import RegistryClient
from driftline.v1 import registry_pb2, registry_pb2_grpc

from .conftest import model_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def registry_env(bootstrap: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        DRIFTLINE_REGISTRY__GRPC_PORT=str(free_port()),
        DRIFTLINE_REGISTRY__ADMIN__PORT=str(free_port()),
        DRIFTLINE_REGISTRY__ARTIFACT_DIR=str(tmp_path / "artifacts"),
        DRIFTLINE_REGISTRY__TOKEN="proc-token",
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
        **extra,
    )
    return env


async def wait_ready(proc: subprocess.Popen[bytes], admin: str, log: Path) -> None:
    """Until the registry process answers ``/readyz`` (fails if it exits or takes 60 s)."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if (await http.get(f"{admin}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "registry never became ready"
            await asyncio.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM; the registry must exit cleanly (0) within 20 s."""
    proc.terminate()
    try:
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_exits_non_zero_with_a_clear_message_when_kafka_is_down(tmp_path: Path) -> None:
    env = registry_env(f"127.0.0.1:{free_port()}", tmp_path, DRIFTLINE_KAFKA__STARTUP_WAIT_S="2")
    proc = subprocess.run(
        [sys.executable, "-m", "driftline.registry"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode != 0
    stderr = proc.stderr.decode()
    assert "driftline registry:" in stderr and "Kafka at" in stderr and "did not answer" in stderr


async def test_process_serves_grpc_health_reflection_and_metrics(
    kafka: Any, tmp_path: Path
) -> None:
    env = registry_env(kafka.bootstrap_servers, tmp_path)
    admin = f"http://127.0.0.1:{env['DRIFTLINE_REGISTRY__ADMIN__PORT']}"
    target = f"127.0.0.1:{env['DRIFTLINE_REGISTRY__GRPC_PORT']}"
    log = (tmp_path / "registry.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftline.registry"], env=env, cwd=ROOT, stdout=log, stderr=log
    )
    try:
        await wait_ready(proc, admin, tmp_path / "registry.log")
        async with httpx.AsyncClient(timeout=2) as http:
            async with grpc.aio.insecure_channel(target) as channel:
                status = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="driftline.v1.Registry")
                )
                assert status.status == health_pb2.HealthCheckResponse.SERVING
                stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
                services = [s.name async for r in stream for s in r.list_services_response.service]
                assert "driftline.v1.Registry" in services

            name = model_name()
            async with RegistryClient(target, token="proc-token") as client:
                await client.register(name, b"artifact")
                await client.set_alias(name, "champion", 1)
                await client.get(name)

            metrics = (await http.get(f"{admin}/metrics")).text
            assert "driftline_registry_versions" in metrics
            assert 'driftline_registry_alias_changes_total{alias="champion",kind="set"}' in metrics
            count = "driftline_request_latency_seconds_count"
            assert f'{count}{{code="OK",method="RegisterVersion"}} 1.0' in metrics
            assert f'{count}{{code="OK",method="GetVersion"}} 1.0' in metrics
    finally:
        stop(proc)


async def test_calls_continue_the_callers_trace(kafka: Any, tmp_path: Path) -> None:
    """Each call's server span, exported over OTLP, is a child of the caller's span."""
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    traced = (("traceparent", f"00-{trace_id}-{caller}-01"),)
    async with otlp_receiver() as (receiver, endpoint):
        env = registry_env(
            kafka.bootstrap_servers, tmp_path, DRIFTLINE_TELEMETRY__OTLP_ENDPOINT=endpoint
        )
        target = f"127.0.0.1:{env['DRIFTLINE_REGISTRY__GRPC_PORT']}"
        log = tmp_path / "registry.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "driftline.registry"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )
        try:
            await wait_ready(
                proc, f"http://127.0.0.1:{env['DRIFTLINE_REGISTRY__ADMIN__PORT']}", log
            )
            async with grpc.aio.insecure_channel(target) as channel:
                stub = registry_pb2_grpc.RegistryStub(channel)
                await stub.ListModels(registry_pb2.ListModelsRequest(), metadata=traced, timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.GetVersion(
                        registry_pb2.GetVersionRequest(name=model_name()),
                        metadata=traced,
                        timeout=10,
                    )
                assert refused.value.code() == grpc.StatusCode.NOT_FOUND
                # A change without the token: refused by the same edge, in the same trace.
                with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
                    await stub.DeleteAlias(
                        registry_pb2.DeleteAliasRequest(name=model_name(), alias="champion"),
                        metadata=traced,
                        timeout=10,
                    )
                assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # The project's own client sends the current trace context by itself.
            client_trace, client_caller = secrets.token_hex(16), secrets.token_hex(8)
            current = SpanContext(
                int(client_trace, 16), int(client_caller, 16), is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )  # fmt: skip
            with trace.use_span(NonRecordingSpan(current)):
                async with RegistryClient(target) as client:
                    await client.list_models()

            def server_span(method: str) -> ReceivedSpan | None:
                return receiver.one(trace_id, "registry", f"driftline.v1.Registry/{method}")

            def client_span() -> ReceivedSpan | None:
                return receiver.one(client_trace, "registry", "driftline.v1.Registry/ListModels")

            # The batch exporter sends every 5 s.
            deadline = time.monotonic() + 30
            methods = ("ListModels", "GetVersion", "DeleteAlias")
            while any(server_span(m) is None for m in methods) or client_span() is None:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"spans received: {receiver.spans}"
                await asyncio.sleep(0.2)
        finally:
            stop(proc)
    for method, status in zip(methods, (0, 5, 16), strict=True):
        span = server_span(method)
        assert span is not None
        assert span.span.kind == Span.SPAN_KIND_SERVER
        assert span.parent_id == caller, f"{method} does not continue the caller's trace"
        assert span.attribute("rpc.grpc.status_code") == status
    via_client = client_span()
    assert via_client is not None and via_client.parent_id == client_caller, (
        "RegistryClient does not carry the caller's trace to the registry"
    )
