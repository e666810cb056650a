"""``python -m driftline.serving`` as its own process: unready without a model, then ready."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
import httpx
import pytest

from driftline.devtools.infra import free_port
from driftline.settings import PlatformSettings
from driftline.v1 import (
    feature_store_pb2_grpc,
    predictor_pb2,
    predictor_pb2_grpc,
    registry_pb2_grpc,
)
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc

from .conftest import (
    MODEL,
    SIGNING_KEY,
    ServingStack,
    StandInFeatureStore,
    StandInRegistry,
    _start_server,
    trained_tree,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


async def test_process_is_unavailable_until_a_champion_is_promoted(
    platform_settings: PlatformSettings, tmp_path: Path
) -> None:
    registry, features = StandInRegistry(), StandInFeatureStore()
    registry.add(1, trained_tree(0, n=500))
    reg_server, reg_port = await _start_server(
        registry, registry_pb2_grpc.add_RegistryServicer_to_server
    )
    fs_server, fs_port = await _start_server(
        features, feature_store_pb2_grpc.add_FeatureStoreServicer_to_server
    )
    grpc_port, admin_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=platform_settings.kafka.bootstrap_servers,
        DRIFTLINE_SERVING__GRPC_PORT=str(grpc_port),
        DRIFTLINE_SERVING__ADMIN__PORT=str(admin_port),
        DRIFTLINE_SERVING__FEATURES_TARGET=f"127.0.0.1:{fs_port}",
        DRIFTLINE_SERVING__REGISTRY_TARGET=f"127.0.0.1:{reg_port}",
        DRIFTLINE_SERVING__SIGNING_KEY=SIGNING_KEY,
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
    )
    log = (tmp_path / "serving.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "driftline.serving", env=env, stdout=log, stderr=log, cwd=ROOT
    )
    stack = ServingStack(platform_settings, registry, features, f"127.0.0.1:{grpc_port}", "")
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        async with httpx.AsyncClient() as http:

            async def readyz() -> int:
                if proc.returncode is not None:
                    raise AssertionError((tmp_path / "serving.log").read_text())
                try:
                    return (await http.get(f"{admin}/readyz")).status_code
                except httpx.HTTPError:
                    return 0

            await wait_until(lambda: _equals(readyz(), 503), 60, "serving to answer /readyz")
            async with grpc.aio.insecure_channel(stack.target) as channel:
                stub = predictor_pb2_grpc.PredictorStub(channel)
                details: list[str] = []

                async def unavailable_without_champion() -> bool:
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub.Predict(
                            predictor_pb2.PredictRequest(entity_id="c-1", model_name=MODEL),
                            timeout=5,
                        )
                    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                    details.append(err.value.details() or "")
                    # Before the first registry sync: "not loaded its models yet"; after it:
                    # the model is known but has no champion.
                    return "no champion" in details[-1]

                await wait_until(unavailable_without_champion, 60, "the registry sync")
                oip_stub = oip_grpc.GRPCInferenceServiceStub(channel)
                ready = await oip_stub.ServerReady(oip.ServerReadyRequest(), timeout=5)
                assert ready.ready is False

                await stack.promote("champion", 1)
                await wait_until(lambda: _equals(readyz(), 200), 60, "serving to load v1")
                answer = await stub.Predict(
                    predictor_pb2.PredictRequest(entity_id="c-1", model_name=MODEL), timeout=5
                )
                assert answer.model_version == 1
                ready = await oip_stub.ServerReady(oip.ServerReadyRequest(), timeout=5)
                assert ready.ready is True
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
        log.close()
        await reg_server.stop(0)
        await fs_server.stop(0)
    assert proc.returncode == 0, (tmp_path / "serving.log").read_text()


async def _equals(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]
