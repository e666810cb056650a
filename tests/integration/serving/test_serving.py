"""Serving over real gRPC sockets with the real Kafka broker.

The registry and feature store are small real gRPC servers from conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import ValidationError

from driftline.contracts.messages import PredictionBatch, PredictionRecord, prediction_records
from driftline.contracts.topics import PREDICTIONS
from driftline.edge.values import value_from_pb, values_to_pb
from driftline.kafkaio import make_consumer
from driftline.monitoring.core import MonitorCore
from driftline.monitoring.kafka_loop import KafkaMonitorLoop
from driftline.monitoring.monitor_metrics import MonitorMetrics
from driftline.serving.canary import in_canary
from driftline.telemetry import ConsumerHealth, ServiceMetrics
from driftline.v1 import common_pb2, predictor_pb2, predictor_pb2_grpc

from .conftest import MODEL, ServingStack, agrawal_rows, wait_until

pytestmark = pytest.mark.integration


def _request(entity: str, row: dict[str, Any] | None = None, **kw: Any) -> Any:
    return predictor_pb2.PredictRequest(
        entity_id=entity,
        model_name=MODEL,
        features=values_to_pb(row or {}),
        **kw,
    )


async def _model_version_metric(stack: ServingStack, alias: str) -> int | None:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{stack.admin_url}/metrics")).text
    needle = f'driftline_serving_model_version{{alias="{alias}",model="{MODEL}"}} '
    for line in text.splitlines():
        if line.startswith(needle):
            return int(float(line[len(needle) :]))
    return None


async def test_predict_reads_online_features_and_reports_their_age(
    serving_stack: ServingStack,
) -> None:
    row = agrawal_rows(1)[0]
    serving_stack.features.values["customer-1"] = row
    async with grpc.aio.insecure_channel(serving_stack.target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        r = await stub.Predict(_request("customer-1", event_id="ev-1"), timeout=5)
        with_override = await stub.Predict(_request("customer-1", {"salary": 140_000.0}), timeout=5)
    assert (r.model_name, r.model_version, r.variant, r.event_id) == (MODEL, 1, "champion", "ev-1")
    assert {k: value_from_pb(v) for k, v in r.features.items()} == row
    assert dict(r.feature_ages_ms) == {n: 1500 for n in row}
    assert set(r.feature_status.values()) == {common_pb2.FEATURE_STATUS_PRESENT}
    assert value_from_pb(r.prediction) in (0, 1) and abs(sum(r.probabilities.values()) - 1.0) < 1e-9
    assert len(r.request_id) == 32
    assert value_from_pb(with_override.features["salary"]) == 140_000.0
    assert "salary" not in with_override.feature_ages_ms


TRITON_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tc

args = json.load(sys.stdin)
client = tc.InferenceServerClient(args["url"])
out = {"live": client.is_server_live(), "ready": client.is_model_ready(args["model"])}
meta = client.get_model_metadata(args["model"], as_json=True)
out["meta"] = meta
rows = args["rows"]
numpy_type = {"FP64": np.float64, "INT64": np.int64}
inputs = []
for spec in meta["inputs"]:
    arr = np.array([[r[spec["name"]]] for r in rows], dtype=numpy_type[spec["datatype"]])
    tensor = tc.InferInput(spec["name"], list(arr.shape), spec["datatype"])
    tensor.set_data_from_numpy(arr)
    inputs.append(tensor)
result = client.infer(args["model"], inputs, request_id="triton-1")
out["predict"] = [p.decode() for p in result.as_numpy("predict").tolist()]
out["probability"] = result.as_numpy("probability").tolist()
response = result.get_response()
out["version"] = response.model_version
out["raw"] = len(response.raw_output_contents)
print(json.dumps(out))
"""


async def test_tritonclient_gets_the_same_predictions_as_predict(
    serving_stack: ServingStack,
) -> None:
    rows = agrawal_rows(64, seed=21)
    # tritonclient's generated protobuf modules clash with ours (both define
    # `inference.*`), so the unmodified client runs in its own process.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TRITON_SCRIPT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    payload = json.dumps({"url": serving_stack.target, "model": MODEL, "rows": rows}).encode()
    stdout, stderr = await asyncio.wait_for(proc.communicate(payload), 120)
    assert proc.returncode == 0, stderr.decode()
    triton = json.loads(stdout)

    assert triton["live"] and triton["ready"]
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in triton["meta"]["inputs"]}
    assert inputs["salary"] == ("FP64", ["-1", "1"]) and inputs["age"] == ("INT64", ["-1", "1"])
    assert len(inputs) == 9
    assert triton["version"] == "1" and triton["raw"] == 3  # predict, probability, probabilities

    async with grpc.aio.insecure_channel(serving_stack.target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        answers = [
            await stub.Predict(_request(f"unknown-{i}", row), timeout=5)
            for i, row in enumerate(rows)
        ]
    assert triton["predict"] == [str(value_from_pb(a.prediction)) for a in answers]
    assert triton["probability"] == pytest.approx(
        [a.probabilities[str(value_from_pb(a.prediction))] for a in answers]
    )
    assert len(set(triton["predict"])) == 2  # both classes occur: the comparison means something


TRITON_BATCH_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tc

args = json.load(sys.stdin)
client = tc.InferenceServerClient(args["url"])
rows = args["rows"]
numpy_type = {"FP64": np.float64, "INT64": np.int64}
inputs = []
for spec in client.get_model_metadata(args["model"], as_json=True)["inputs"]:
    arr = np.array([[r[spec["name"]]] for r in rows], dtype=numpy_type[spec["datatype"]])
    tensor = tc.InferInput(spec["name"], list(arr.shape), spec["datatype"])
    tensor.set_data_from_numpy(arr)
    inputs.append(tensor)
entities = np.array([[e.encode()] for e in args["entities"]], dtype=np.object_)
tensor = tc.InferInput("entity_id", list(entities.shape), "BYTES")
tensor.set_data_from_numpy(entities)
inputs.append(tensor)
result = client.infer(args["model"], inputs, request_id=args["request_id"])
print(json.dumps([p.decode() for p in result.as_numpy("predict").tolist()]))
"""


async def _predictions_keyed(stack: ServingStack, key: bytes, timeout_s: float = 30) -> list[Any]:
    """The driftline.predictions records keyed ``key``: once one is there, all up to the end."""
    consumer = make_consumer(
        stack.settings.kafka,
        "serving-test-batch",
        PREDICTIONS,
        group_id=f"serving-test-{uuid.uuid4().hex}",
    )
    await consumer.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not found and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(r for r in records if r.key == key)
        # Whatever else the writer wrote for the request is before the end now.
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(r for r in records if r.key == key)
    finally:
        await consumer.stop()
    return found


async def test_a_256_row_model_infer_is_one_logged_record_that_monitoring_reads_as_rows(
    serving_stack: ServingStack,
) -> None:
    rows = agrawal_rows(256, seed=23)
    request_id = f"batch-{uuid.uuid4().hex}"
    entities = [f"e-{i}" for i in range(256)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TRITON_BATCH_SCRIPT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    payload = {
        "url": serving_stack.target,
        "model": MODEL,
        "rows": rows,
        "entities": entities,
        "request_id": request_id,
    }
    stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(payload).encode()), 120)
    assert proc.returncode == 0, stderr.decode()
    answered = json.loads(stdout)

    [record] = await _predictions_keyed(serving_stack, request_id.encode())
    batch = PredictionBatch.model_validate_json(record.value)
    assert (batch.model_name, batch.model_version, batch.variant) == (MODEL, 1, "champion")
    logged = prediction_records(record.value)
    assert [r.request_id for r in logged] == [f"{request_id}/{i}" for i in range(256)]
    assert [r.entity_id for r in logged] == entities
    assert [r.features for r in logged] == rows
    assert [str(r.prediction) for r in logged] == answered
    assert len(set(answered)) == 2  # both classes occur: the comparison means something

    # Monitoring's Kafka loop reads the one record as its 256 rows.
    metrics = ServiceMetrics("monitoring")
    health = ConsumerHealth(metrics.registry, stall_after_s=60)
    core = MonitorCore(serving_stack.settings.monitoring)
    loop = KafkaMonitorLoop(core, serving_stack.settings, metrics, MonitorMetrics(metrics), health)
    loop.dispatch(record)
    assert core.counts["predictions"] == 256
    assert core.counts["unjoinable"] == 256  # ModelInfer rows carry no event id
    assert health.skipped(PREDICTIONS.name, "unreadable") == 0
    assert 'driftline_messages_in_total{topic="driftline.predictions"} 1.0' in (
        metrics.render().decode()
    )


async def test_hot_swap_under_load_fails_nothing_and_serves_the_new_version(
    serving_stack: ServingStack,
) -> None:
    rows = agrawal_rows(50, seed=5)
    results: list[tuple[float, float, int]] = []  # (started, finished, version)
    errors: list[str] = []
    stop = asyncio.Event()

    async def client(channel: grpc.aio.Channel, worker: int) -> None:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        i = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                r = await stub.Predict(_request(f"c-{worker}-{i}", rows[i % 50]), timeout=5)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
            else:
                results.append((started, time.monotonic(), r.model_version))
            i += 1

    async with grpc.aio.insecure_channel(serving_stack.target) as channel:
        workers = [asyncio.create_task(client(channel, w)) for w in range(8)]
        await wait_until(lambda: len(results) > 200, 30, "steady load")
        promoted_at = time.monotonic()
        await serving_stack.promote("champion", 2)
        await wait_until(
            lambda: sum(1 for s, _, v in results if v == 2 and s > promoted_at) > 200,
            30,
            "responses from v2",
        )
        stop.set()
        await asyncio.gather(*workers)

    assert errors == []
    first_v2 = min(f for _, f, v in results if v == 2)
    # Every request sent after the first v2 answer was answered by v2: one swap, no flapping.
    assert {v for s, _, v in results if s > first_v2} == {2}
    assert {v for _, f, v in results if f < promoted_at} == {1}
    print(f"swap visible {first_v2 - promoted_at:.3f}s after the promotion was published")


async def test_shadow_predictions_are_logged_flagged_and_never_returned(
    serving_stack: ServingStack,
) -> None:
    await serving_stack.promote("shadow", 2)
    await wait_until(
        lambda: _model_version_metric(serving_stack, "shadow"), 30, "the shadow to load"
    )
    rows = agrawal_rows(30, seed=9)
    request_ids = [uuid.uuid4().hex for _ in rows]
    async with grpc.aio.insecure_channel(serving_stack.target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        answers = [
            await stub.Predict(_request(f"s-{i}", row, request_id=rid), timeout=5)
            for i, (row, rid) in enumerate(zip(rows, request_ids, strict=True))
        ]
    assert {(a.model_version, a.variant) for a in answers} == {(1, "champion")}

    consumer = make_consumer(
        serving_stack.settings.kafka,
        "serving-test-predictions",
        PREDICTIONS,
        group_id=f"serving-test-{uuid.uuid4().hex}",
    )
    await consumer.start()
    wanted = set(request_ids)
    found: list[PredictionRecord] = []
    try:
        deadline = time.monotonic() + 30
        while len(found) < 2 * len(rows) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        recs = prediction_records(record.value or b"")
                    except ValidationError:
                        continue  # other tests write garbage to this shared topic
                    found.extend(r for r in recs if r.request_id in wanted)
    finally:
        await consumer.stop()
    shadow = [r for r in found if r.shadow]
    answered = [r for r in found if not r.shadow]
    assert len(shadow) == len(answered) == len(rows)
    assert {(r.model_version, r.variant) for r in shadow} == {(2, "shadow")}
    assert {(r.model_version, r.variant) for r in answered} == {(1, "champion")}
    by_id = {r.request_id: r for r in answered}
    assert [by_id[rid].prediction for rid in request_ids] == [
        value_from_pb(a.prediction) for a in answers
    ]


async def test_canary_is_set_at_run_time_and_sticky(serving_stack: ServingStack) -> None:
    await serving_stack.promote("challenger", 2)
    await wait_until(
        lambda: _model_version_metric(serving_stack, "challenger"), 30, "the challenger"
    )
    entities = [f"customer-{i}" for i in range(200)]
    async with grpc.aio.insecure_channel(serving_stack.target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        config = await stub.SetCanary(
            predictor_pb2.SetCanaryRequest(model_name=MODEL, percent=20, actor="test"), timeout=5
        )
        assert (config.percent, config.alias, config.version) == (20.0, "challenger", 2)
        got = await stub.GetCanary(predictor_pb2.GetCanaryRequest(model_name=MODEL), timeout=5)
        assert got.percent == 20.0 and got.updated_by == "test"
        batch = predictor_pb2.PredictBatchRequest(requests=[_request(e) for e in entities])
        first = await stub.PredictBatch(batch, timeout=10)
        again = await stub.PredictBatch(batch, timeout=10)
    variants = [r.variant for r in first.responses]
    assert variants == [r.variant for r in again.responses]
    assert variants == ["challenger" if in_canary(e, 20.0) else "champion" for e in entities]
    assert {r.model_version for r in first.responses if r.variant == "challenger"} == {2}


async def test_bad_requests_health_reflection_and_metrics(serving_stack: ServingStack) -> None:
    async with grpc.aio.insecure_channel(serving_stack.target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        cases = [
            (_request(""), grpc.StatusCode.INVALID_ARGUMENT, "entity_id is required"),
            (_request("c", {"income": 1.0}), grpc.StatusCode.INVALID_ARGUMENT, "'income'"),
            (
                predictor_pb2.PredictRequest(entity_id="c", model_name="nope"),
                grpc.StatusCode.NOT_FOUND,
                "'nope'",
            ),
            (_request("c", version=99), grpc.StatusCode.NOT_FOUND, "no such version"),
        ]
        for request, code, needle in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Predict(request, timeout=5)
            assert err.value.code() == code and needle in (err.value.details() or "")

        batch = predictor_pb2.PredictBatchRequest(requests=[_request("a"), _request("")])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.PredictBatch(batch, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith("requests[1]:")

        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(
            health_pb2.HealthCheckRequest(service="driftline.v1.Predictor"), timeout=5
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING

        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def requests() -> Any:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for answer in reflect.ServerReflectionInfo(requests()):
            names = {s.name for s in answer.list_services_response.service}
            break
    assert {"driftline.v1.Predictor", "inference.GRPCInferenceService"} <= names
    assert "grpc.health.v1.Health" in names

    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{serving_stack.admin_url}/metrics")).text
        ready = await client.get(f"{serving_stack.admin_url}/readyz")
    assert ready.status_code == 200
    assert 'driftline_serving_requests_total{code="NOT_FOUND",method="Predict"} 2.0' in metrics
    assert 'driftline_request_latency_seconds_count{code="INVALID_ARGUMENT",method="Predict"}' in (
        metrics
    )
