"""``python -m driftline.registry`` as a process: admin endpoints, gRPC health, Kafka down."""

from __future__ import annotations

import asyncio
import os
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

from driftline.infra import free_port
from driftline.registry_client import RegistryClient

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
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                assert proc.poll() is None, (tmp_path / "registry.log").read_text()
                try:
                    if (await http.get(f"{admin}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "registry never became ready"
                await asyncio.sleep(0.2)

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
        proc.terminate()
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
