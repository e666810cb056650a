"""Misuse of a running platform: garbage over Kafka and HTTP, bad RPCs, a promotion under load.

One platform serves the module (the registry requires a token for mutating
calls).  Each test checks what a user would notice: every bad record
dead-lettered with the reason that names its fault, the right gRPC status for
every bad call, no service crashed or restarted (same pids, ``/healthz`` 200),
and a champion change under load answered without a single failed request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaProducer
from integration.chaos.chaos_stream import (
    MODEL,
    LiveStream,
    RegistryView,
    account_until_complete,
    read_topic,
    registry_view,
    serving_answers,
    wait_champion,
)
from integration.chaos.conftest import REGISTRY_TOKEN
from support.platform import SERVICES, LivePlatform

from driftline.contracts.messages import DeadLetter
from driftline.contracts.topics import DLQ, EVENTS, LABELS
from driftline.edge.values import values_to_pb
from driftline.v1 import predictor_pb2, predictor_pb2_grpc, registry_pb2, registry_pb2_grpc
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc

pytestmark = pytest.mark.timeout(600)

GOOD_FEATURES: dict[str, Any] = {
    "salary": 72000.0,
    "commission": 0.0,
    "age": 41,
    "elevel": 2,
    "car": 7,
    "zipcode": 3,
    "hvalue": 250000.0,
    "hyears": 12,
    "loan": 120000.0,
}
FP64 = ("salary", "commission", "hvalue", "loan")


def _event(run: str, name: str, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": f"{run}-{name}",
        "entity_id": f"{run}-c1",
        "timestamp": int(time.time() * 1000),
        "featureset": "loans",
        "features": dict(GOOD_FEATURES),
    }
    for key, value in changes.items():
        if key in GOOD_FEATURES:
            doc["features"][key] = value
        elif value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def bad_corpus(run: str) -> list[tuple[str, str, bytes, str]]:
    """``(case, kind, bytes, expected reason)``; every value is unique to ``run`` and the case."""

    def enc(doc: dict[str, Any]) -> bytes:
        return json.dumps(doc).encode()

    nan = json.dumps(_event(run, "nan")).replace('"salary": 72000.0', '"salary": NaN')
    inf = json.dumps(_event(run, "inf")).replace('"loan": 120000.0', '"loan": Infinity')
    whole = enc(_event(run, "truncated"))
    huge = _event(run, "huge")
    huge["note"] = "x" * 100_000
    label_nan = json.dumps(
        {"event_id": f"{run}-ln", "entity_id": f"{run}-c1", "timestamp": 1, "label": 0.5}
    ).replace("0.5", "NaN")
    return [
        ("truncated JSON", "event", whole[: len(whole) // 2], "unparseable"),
        (
            "non-UTF-8",
            "event",
            f'{{"event_id": "{run}-latin1", "note": "'.encode() + b'caf\xe9"}',
            "unparseable",
        ),
        ("not an object", "event", f'"{run}-not-an-object"'.encode(), "unparseable"),
        ("wrong type", "event", enc(_event(run, "type", age="forty-one")), "schema"),
        ("NaN", "event", nan.encode(), "constraint"),
        ("Infinity", "event", inf.encode(), "constraint"),
        ("out of range", "event", enc(_event(run, "range", age=400)), "constraint"),
        ("missing entity", "event", enc(_event(run, "noentity", entity_id=None)), "schema"),
        ("missing features", "event", enc(_event(run, "nofeat", features=None)), "schema"),
        (
            "unknown feature set",
            "event",
            enc(_event(run, "fs", featureset="nope")),
            "unknown_featureset",
        ),
        ("huge payload", "event", enc(huge), "too_large"),
        ("label NaN", "label", label_nan.encode(), "constraint"),
    ]


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


async def test_bad_inputs_over_kafka_and_http_are_dead_lettered(platform: LivePlatform) -> None:
    run = uuid.uuid4().hex[:8]
    pids = platform.pids()
    kafka_cases = bad_corpus(f"k{run}")
    http_cases = bad_corpus(f"h{run}")
    duplicate = json.dumps(_event(f"d{run}", "dup")).encode()
    http_duplicate = json.dumps(_event(f"hd{run}", "dup")).encode()

    async def over_kafka() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=platform.kafka.bootstrap_servers, max_request_size=2_000_000
        )
        await producer.start()
        try:
            for _, kind, raw, _ in kafka_cases:
                await producer.send_and_wait(EVENTS.name if kind == "event" else LABELS.name, raw)
            await producer.send_and_wait(EVENTS.name, duplicate, key=f"d{run}-c1".encode())
            await producer.send_and_wait(EVENTS.name, duplicate, key=f"d{run}-c1".encode())
        finally:
            await producer.stop()

    def over_http() -> list[tuple[str, int, dict[str, Any]]]:
        answers = []
        for case, kind, raw, _ in http_cases:
            status, body = _post(platform.admin_url("ingestion", f"/v1/{kind}s"), raw)
            answers.append((case, status, body))
        for i in range(2):
            status, body = _post(platform.admin_url("ingestion", "/v1/events"), http_duplicate)
            answers.append((f"duplicate #{i + 1}", status, body))
        return answers

    stream = LiveStream(platform, f"live{run}", rate=40.0)
    stream.start()
    try:
        _, answers = await asyncio.gather(over_kafka(), asyncio.to_thread(over_http))
        await stream.wait_sent(40)
    finally:
        await stream.stop()

    # HTTP callers are told, record by record, what was wrong.
    expected_http = {case: reason for case, _, _, reason in http_cases}
    expected_http["duplicate #2"] = "duplicate"
    for case, status, body in answers:
        if case == "duplicate #1":
            assert (status, body.get("accepted")) == (200, 1), body
            continue
        assert status == 422, f"{case}: HTTP {status} {body}"
        assert [r["reason"] for r in body["rejected"]] == [expected_http[case]], (case, body)

    # Every bad record is on the DLQ, byte for byte, with the reason naming its fault.
    wanted = {raw: (case, reason) for case, _, raw, reason in kafka_cases + http_cases}
    # Keyed by the original's sha256: the letter of an oversized record keeps only its first bytes.
    letters: dict[str, list[DeadLetter]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        letters = {}
        for record in await read_topic(platform.kafka.bootstrap_servers, DLQ):
            letter = DeadLetter.model_validate_json(record.value)
            digest = letter.original_sha256 or _sha(letter.original())
            letters.setdefault(digest, []).append(letter)
        if all(_sha(raw) in letters for raw in wanted) and _sha(duplicate) in letters:
            break
        await asyncio.sleep(1.0)
    problems = []
    for raw, (case, reason) in wanted.items():
        got = sorted({f"{x.source}:{x.reason.value}" for x in letters.get(_sha(raw), [])})
        if not got or any(not g.endswith(":" + reason) for g in got):
            problems.append(f"{case}: want {reason}, dead letters {got}")
    assert not problems, "\n".join(problems)
    assert [x.reason.value for x in letters.get(_sha(duplicate), [])] == ["duplicate"]
    assert [x.reason.value for x in letters.get(_sha(http_duplicate), [])] == ["duplicate"]
    assert {x.source for _, _, raw, _ in kafka_cases for x in letters[_sha(raw)]} == {"kafka"}
    assert {x.source for _, _, raw, _ in http_cases for x in letters[_sha(raw)]} == {"http"}

    # The live stream around it went through untouched, and nothing crashed.
    sent = [e["event_id"] for e in stream.events]
    books = await account_until_complete(platform.kafka.bootstrap_servers, f"live{run}-", sent)
    assert not books.missing(sent) and not books.dead
    assert platform.pids() == pids, platform.logs()
    assert {n: platform.http_status(n) for n in SERVICES} == dict.fromkeys(SERVICES, 200)


@pytest.fixture(scope="module")
async def two_versions(platform: LivePlatform) -> RegistryView:
    """Stream until training has registered two versions and one of them is champion."""
    stream = LiveStream(platform, f"train{uuid.uuid4().hex[:6]}", rate=100.0, seed=5)
    stream.start()
    try:
        deadline = time.monotonic() + 240
        while True:
            view = await wait_champion(platform.registry_target, timeout_s=240)
            if len(view.versions) >= 2:
                break
            assert time.monotonic() < deadline, f"only {view.versions} registered"
            await asyncio.sleep(1.0)
    finally:
        await stream.stop()
    await serving_answers(platform.serving_target, stream.events[-1]["entity_id"], 90)
    return view


def _infer_request(model: str = MODEL, **overrides: Any) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=model)
    for name, value in GOOD_FEATURES.items():
        tensor = request.inputs.add(name=name, shape=[1])
        if name in FP64:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.append(float(value))
        else:
            tensor.datatype = "INT64"
            tensor.contents.int64_contents.append(int(value))
    for name, change in overrides.items():
        for tensor in request.inputs:
            if tensor.name == name:
                change(tensor)
    return request


async def _stalled_upload() -> Any:
    """A RegisterVersion stream that sends its metadata, then stalls before any chunk."""
    yield registry_pb2.RegisterVersionRequest(
        metadata=registry_pb2.RegisterVersionMetadata(model_name=MODEL, actor="chaos")
    )
    await asyncio.sleep(3)
    yield registry_pb2.RegisterVersionRequest(chunk=b"never sent in time")


async def test_bad_rpcs_get_the_right_status_and_servers_keep_serving(
    platform: LivePlatform, two_versions: RegistryView
) -> None:
    pids = platform.pids()

    def shape(t: Any) -> None:
        t.shape[:] = [1, 3]

    def dtype(t: Any) -> None:
        t.datatype = "FP99"

    def bytes_for_number(t: Any) -> None:
        t.datatype = "BYTES"
        t.ClearField("contents")
        t.contents.bytes_contents.append(b"lots")

    def rows(t: Any) -> None:
        t.shape[:] = [2]
        t.contents.fp64_contents.append(1.0)

    token = [("authorization", f"Bearer {REGISTRY_TOKEN}")]
    set_alias = registry_pb2.SetAliasRequest(
        name=MODEL, alias="shadow", version=two_versions.versions[0][0], actor="chaos", reason="t"
    )
    async with (
        grpc.aio.insecure_channel(platform.serving_target) as serving,
        grpc.aio.insecure_channel(platform.registry_target) as registry,
    ):
        infer: Any = oip_grpc.GRPCInferenceServiceStub(serving)
        predict: Any = predictor_pb2_grpc.PredictorStub(serving)
        reg: Any = registry_pb2_grpc.RegistryStub(registry)
        good_predict = predictor_pb2.PredictRequest(
            entity_id="chaos-rpc",
            model_name=MODEL,
            features=values_to_pb(GOOD_FEATURES),
        )
        bad_calls: list[tuple[str, Any, grpc.StatusCode]] = [
            (
                "ModelInfer [1, 3] shape",
                infer.ModelInfer(_infer_request(salary=shape)),
                "INVALID_ARGUMENT",
            ),
            (
                "ModelInfer unknown dtype",
                infer.ModelInfer(_infer_request(salary=dtype)),
                "INVALID_ARGUMENT",
            ),
            (
                "ModelInfer BYTES for FP64",
                infer.ModelInfer(_infer_request(salary=bytes_for_number)),
                "INVALID_ARGUMENT",
            ),
            (
                "ModelInfer row mismatch",
                infer.ModelInfer(_infer_request(salary=rows)),
                "INVALID_ARGUMENT",
            ),
            (
                "ModelInfer unknown model",
                infer.ModelInfer(_infer_request("no-such-model")),
                "NOT_FOUND",
            ),
            (
                "Predict unknown model",
                predict.Predict(predictor_pb2.PredictRequest(entity_id="x", model_name="nope")),
                "NOT_FOUND",
            ),
            (
                "Predict without entity id",
                predict.Predict(predictor_pb2.PredictRequest(model_name=MODEL)),
                "INVALID_ARGUMENT",
            ),
            ("SetAlias without token", reg.SetAlias(set_alias), "UNAUTHENTICATED"),
            (
                "SetAlias with a wrong token",
                reg.SetAlias(set_alias, metadata=[("authorization", "Bearer wrong")]),
                "UNAUTHENTICATED",
            ),
            # Deadlines that expire while the work is under way. (A sub-millisecond
            # timeout does not do: gRPC sends timeouts with ~1 ms resolution, and a
            # call that fast often completes before either side notices.)
            (
                "PredictBatch of 5,000 with a 30 ms deadline",
                predict.PredictBatch(
                    predictor_pb2.PredictBatchRequest(
                        requests=[
                            predictor_pb2.PredictRequest(entity_id=f"slow-{i}", model_name=MODEL)
                            for i in range(5000)
                        ]
                    ),
                    timeout=0.03,
                ),
                "DEADLINE_EXCEEDED",
            ),
            (
                "RegisterVersion whose upload outlives its deadline",
                reg.RegisterVersion(_stalled_upload(), metadata=token, timeout=0.3),
                "DEADLINE_EXCEEDED",
            ),
        ]
        wrong = []
        for what, call, want in bad_calls:
            try:
                await call
                wrong.append(f"{what}: succeeded, want {want}")
            except grpc.aio.AioRpcError as exc:
                if exc.code().name != want:
                    wrong.append(f"{what}: {exc.code().name} ({exc.details()}), want {want}")
                elif want != "DEADLINE_EXCEEDED":
                    assert exc.details(), f"{what}: {want} without a message"
        assert not wrong, "\n".join(wrong)

        # The servers keep serving, and the refused call changed nothing.
        answer = await predict.Predict(good_predict, timeout=10)
        assert answer.model_version == two_versions.champion()
        inferred = await infer.ModelInfer(_infer_request(), timeout=10)
        assert [o.name for o in inferred.outputs][:1] == ["predict"]
        assert (await registry_view(platform.registry_target)).history == two_versions.history
        moved = await reg.SetAlias(set_alias, metadata=token, timeout=10)
        assert moved.change.alias == "shadow"
    assert platform.pids() == pids, platform.logs()
    assert {n: platform.http_status(n) for n in SERVICES} == dict.fromkeys(SERVICES, 200)


async def test_promotion_under_load_fails_no_request(
    platform: LivePlatform, two_versions: RegistryView
) -> None:
    view = await registry_view(platform.registry_target)
    old = view.champion()
    new = next(v for v, _ in reversed(view.versions) if v != old)
    failures: list[str] = []
    answered: dict[int, int] = {}
    stop = asyncio.Event()

    async def client(i: int, predict: Any) -> None:
        n = 0
        while not stop.is_set():
            request = predictor_pb2.PredictRequest(
                entity_id=f"load-{i}-{n % 7}",
                model_name=MODEL,
                features=values_to_pb(GOOD_FEATURES),
            )
            n += 1
            try:
                response = await predict.Predict(request, timeout=5)
                answered[response.model_version] = answered.get(response.model_version, 0) + 1
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")

    async with (
        grpc.aio.insecure_channel(platform.serving_target) as serving,
        grpc.aio.insecure_channel(platform.registry_target) as registry,
    ):
        predict: Any = predictor_pb2_grpc.PredictorStub(serving)
        clients = [asyncio.create_task(client(i, predict)) for i in range(8)]
        try:
            while sum(answered.values()) < 200 and not failures:
                await asyncio.sleep(0.05)
            reg: Any = registry_pb2_grpc.RegistryStub(registry)
            await reg.SetAlias(
                registry_pb2.SetAliasRequest(
                    name=MODEL,
                    alias="champion",
                    version=new,
                    actor="chaos",
                    reason="promotion under load",
                    expected_version=old or 0,
                ),
                metadata=[("authorization", f"Bearer {REGISTRY_TOKEN}")],
                timeout=10,
            )
            deadline = time.monotonic() + 60
            while answered.get(new, 0) < 200 and time.monotonic() < deadline and not failures:
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*clients)
    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:5]}"
    assert answered.get(old or -1, 0) > 0 and answered.get(new, 0) >= 200, answered
