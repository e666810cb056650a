"""Promotions serving cannot follow, written with kcat: the champion keeps serving.

``python -m driftline.serving`` runs against the real broker with champion v1.
Then ``driftline.models`` gets unreadable records (not JSON, invalid UTF-8, a
tombstone, the wrong schema) and promotions to what cannot be served: a version
the registry does not have, a model it does not have, a rollback to nothing, an
artifact whose signature does not verify and a signed one that does not unpickle.
Predict and ModelInfer still answer with v1, a valid promotion after them is
followed, and /metrics counts each bad record in ``driftline_records_skipped_total``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from support.internal_records import GARBAGE, delta, kcat_produce, scrape_skipped

from driftline.artifacts import digest, sign
from driftline.contracts.messages import RegistryEvent, RegistryEventKind, utcnow
from driftline.contracts.topics import MODELS
from driftline.devtools.infra import free_port
from driftline.settings import PlatformSettings
from driftline.v1 import (
    feature_store_pb2,
    feature_store_pb2_grpc,
    predictor_pb2,
    predictor_pb2_grpc,
    registry_pb2_grpc,
)
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc

from .conftest import (
    LOAN_TYPES,
    MODEL,
    SIGNING_KEY,
    ServingStack,
    StandInFeatureStore,
    StandInRegistry,
    _start_server,
    agrawal_rows,
    trained_tree,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _promotion(kind: RegistryEventKind, version: int, model: str = MODEL) -> bytes:
    event = RegistryEvent(
        event_id=uuid.uuid4().hex,
        kind=kind,
        model_name=model,
        version=version,
        alias="champion",
        previous_version=1,
        actor="kcat",
        at=utcnow(),
    )
    return event.model_dump_json().encode()


def _infer_request(row: dict[str, Any]) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=MODEL)
    for name, kind in LOAN_TYPES.items():
        tensor = request.inputs.add(name=name, shape=[1])
        if kind == feature_store_pb2.FEATURE_TYPE_DOUBLE:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.append(float(row[name]))
        else:
            tensor.datatype = "INT64"
            tensor.contents.int64_contents.append(int(row[name]))
    return request


async def _metric(admin: str, needle: str) -> float | None:
    async with httpx.AsyncClient(timeout=5) as http:
        for line in (await http.get(f"{admin}/metrics")).text.splitlines():
            if line.startswith(needle + " "):
                return float(line.rsplit(" ", 1)[1])
    return None


async def test_promotions_serving_cannot_follow_leave_the_champion_serving(
    platform_settings: PlatformSettings, tmp_path: Path
) -> None:
    registry, features = StandInRegistry(), StandInFeatureStore()
    registry.add(1, trained_tree(0, n=500))
    registry.add(2, trained_tree(2, flip=True, n=500))
    registry.add(3, trained_tree(1, n=500), signature="0" * 64)  # tampered: does not verify
    junk = b"signed, but not a pickle"
    registry.artifacts[4] = (junk, digest(junk), sign(junk, SIGNING_KEY))
    registry.aliases["champion"] = 1
    reg_server, reg_port = await _start_server(
        registry, registry_pb2_grpc.add_RegistryServicer_to_server
    )
    fs_server, fs_port = await _start_server(
        features, feature_store_pb2_grpc.add_FeatureStoreServicer_to_server
    )
    grpc_port, admin_port = free_port(), free_port()
    bootstrap = platform_settings.kafka.bootstrap_servers
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        DRIFTLINE_SERVING__GRPC_PORT=str(grpc_port),
        DRIFTLINE_SERVING__ADMIN__PORT=str(admin_port),
        DRIFTLINE_SERVING__FEATURES_TARGET=f"127.0.0.1:{fs_port}",
        DRIFTLINE_SERVING__REGISTRY_TARGET=f"127.0.0.1:{reg_port}",
        DRIFTLINE_SERVING__SIGNING_KEY=SIGNING_KEY,
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
    )
    log_path = tmp_path / "serving.log"
    log = log_path.open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "driftline.serving", env=env, stdout=log, stderr=log, cwd=ROOT
    )
    stack = ServingStack(platform_settings, registry, features, f"127.0.0.1:{grpc_port}", "")
    admin = f"http://127.0.0.1:{admin_port}"
    version_of = 'driftline_serving_model_version{{alias="{}",model="' + MODEL + '"}}'
    try:

        async def loaded(alias: str, version: int) -> bool:
            if proc.returncode is not None:
                raise AssertionError(log_path.read_text())
            try:
                return await _metric(admin, version_of.format(alias)) == version
            except httpx.HTTPError:
                return False

        # Loaded by the registry sync, which follows the follower's seek to the log's end:
        # what is written from now on is read.
        await wait_until(lambda: loaded("champion", 1), 90, "serving to load champion v1")
        before = await scrape_skipped(admin)

        kcat_produce(
            bootstrap,
            MODELS,
            [
                *GARBAGE.values(),
                _promotion(RegistryEventKind.ALIAS_SET, 99),
                _promotion(RegistryEventKind.ALIAS_SET, 1, model=f"ghost-{uuid.uuid4().hex[:6]}"),
                _promotion(RegistryEventKind.ROLLED_BACK, 0),
                _promotion(RegistryEventKind.ALIAS_SET, 3),
                _promotion(RegistryEventKind.ALIAS_SET, 4),
            ],
            key=MODEL,
        )
        # A valid promotion written after them is followed.
        await stack.promote("challenger", 2)
        await wait_until(lambda: loaded("challenger", 2), 90, "serving to load challenger v2")

        async with grpc.aio.insecure_channel(stack.target) as channel:
            answer = await predictor_pb2_grpc.PredictorStub(channel).Predict(
                predictor_pb2.PredictRequest(entity_id="c-1", model_name=MODEL), timeout=10
            )
            assert answer.model_version == 1 and answer.variant == "champion"
            inferred = await oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                _infer_request(agrawal_rows(1, seed=3)[0]), timeout=10
            )
            assert inferred.model_version == "1"
        assert await _metric(admin, version_of.format("champion")) == 1

        assert delta(await scrape_skipped(admin), before) == {
            (MODELS.name, "unreadable"): 4.0,
            (MODELS.name, "unknown_version"): 2.0,
            (MODELS.name, "unknown_model"): 1.0,
            (MODELS.name, "processing_error"): 2.0,
        }
        invalid = 'driftline_serving_registry_events_total{outcome="invalid"}'
        assert await _metric(admin, invalid) == 9.0
        text = log_path.read_text()
        assert text.count("skipped the record at driftline.models[0]@") == 9
        assert "UnpicklingError" in text  # the refusal names what went wrong with the artifact
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
        log.close()
        await reg_server.stop(0)
        await fs_server.stop(0)
    assert proc.returncode == 0, log_path.read_text()
