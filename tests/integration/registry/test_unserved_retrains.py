"""RecordUnservedRetrain against ``python -m driftline.registry`` as a process: the request
shows in ListModels and on /metrics, is recorded once, and clears with a new version."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from unit.registry.fitted_models import FEATURES, onnx_matrix

from driftline.registry_client import RegistryClient, register_model
from driftline.v1 import registry_pb2, registry_pb2_grpc

from .conftest import model_name
from .test_registry_process import ROOT, registry_env

pytestmark = pytest.mark.integration


def gauge(metrics: str, model: str) -> float | None:
    prefix = f'driftline_registry_unserved_retrains{{model="{model}"}} '
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


async def test_unserved_retrains_show_in_list_models_and_metrics_until_a_new_version(
    kafka: Any, tmp_path: Path
) -> None:
    env = registry_env(kafka.bootstrap_servers, tmp_path)
    admin = f"http://127.0.0.1:{env['DRIFTLINE_REGISTRY__ADMIN__PORT']}"
    target = f"127.0.0.1:{env['DRIFTLINE_REGISTRY__GRPC_PORT']}"
    log = (tmp_path / "registry.log").open("wb")
    # cwd=ROOT: the registry checks versions against examples/featuresets, its default.
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftline.registry"], env=env, cwd=ROOT, stdout=log, stderr=log
    )
    name = model_name()
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "registry.log").read_text()
                try:
                    if (await http.get(f"{admin}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "registry never became ready"
                await asyncio.sleep(0.2)

            async with RegistryClient(target, token="proc-token") as client:
                await register_model(
                    client,
                    name,
                    onnx_matrix(),
                    featureset="loans",
                    task="binary",
                    framework="onnx",
                    features=FEATURES,
                )
                assert gauge((await http.get(f"{admin}/metrics")).text, name) == 0.0

                # What training sends for a retrain request it cannot serve, over raw gRPC.
                async with grpc.aio.insecure_channel(target) as channel:
                    stub = registry_pb2_grpc.RegistryStub(channel)
                    request = registry_pb2.RecordUnservedRetrainRequest(
                        model_name=name,
                        request_id="retrain-1",
                        reason="framework onnx has no trainer",
                        actor="training",
                        drift_ids=["drift-a", "drift-b"],
                    )
                    auth = (("authorization", "Bearer proc-token"),)
                    first = await stub.RecordUnservedRetrain(request, metadata=auth, timeout=20)
                    again = await stub.RecordUnservedRetrain(request, metadata=auth, timeout=20)
                    assert (first.unserved, again.unserved) == (1, 1)
                    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                        await stub.RecordUnservedRetrain(request, timeout=20)
                    assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
                    with pytest.raises(grpc.aio.AioRpcError) as ghost:
                        await stub.RecordUnservedRetrain(
                            registry_pb2.RecordUnservedRetrainRequest(
                                model_name=f"{name}-ghost", request_id="r", reason="x"
                            ),
                            metadata=auth,
                            timeout=20,
                        )
                    assert ghost.value.code() is grpc.StatusCode.NOT_FOUND

                assert (
                    await client.record_unserved_retrain(name, "retrain-2", reason="drift again")
                    == 2
                )
                summary = next(m for m in await client.list_models() if m.name == name)
                assert summary.framework == "onnx"
                assert [
                    (u.request_id, u.reason, u.drift_ids) for u in summary.unserved_retrains
                ] == [
                    ("retrain-1", "framework onnx has no trainer", ["drift-a", "drift-b"]),
                    ("retrain-2", "drift again", []),
                ]
                assert gauge((await http.get(f"{admin}/metrics")).text, name) == 2.0

                # A new version (retrained elsewhere) answers them.
                await register_model(
                    client,
                    name,
                    onnx_matrix(),
                    featureset="loans",
                    task="binary",
                    framework="onnx",
                    features=FEATURES,
                )
                summary = next(m for m in await client.list_models() if m.name == name)
                assert (summary.latest_version, summary.unserved_retrains) == (2, [])
                assert gauge((await http.get(f"{admin}/metrics")).text, name) == 0.0
                # Training replaying the same request after a restart records nothing.
                assert await client.record_unserved_retrain(name, "retrain-1", reason="again") == 0
    finally:
        proc.terminate()
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()

    # A restarted registry rebuilds the same picture from the log.
    env2 = registry_env(kafka.bootstrap_servers, tmp_path)
    proc2 = subprocess.Popen(
        [sys.executable, "-m", "driftline.registry"], env=env2, cwd=ROOT, stdout=log, stderr=log
    )
    try:
        target2 = f"127.0.0.1:{env2['DRIFTLINE_REGISTRY__GRPC_PORT']}"
        async with RegistryClient(target2, timeout_s=5) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    models = await client.list_models()
                    break
                except Exception:
                    assert proc2.poll() is None and time.monotonic() < deadline
                    await asyncio.sleep(0.3)
            summary = next(m for m in models if m.name == name)
            assert (summary.latest_version, summary.framework, summary.unserved_retrains) == (
                2,
                "onnx",
                [],
            )
    finally:
        proc2.terminate()
        try:
            assert proc2.wait(20) == 0
        finally:
            if proc2.poll() is None:
                proc2.kill()
