"""Models of every framework, registered in the real registry service and served from it.

The registry runs in this process on its own gRPC port (its artifacts in a
temporary directory, its log on the harness's Kafka broker), the feature store
is the stand-in of conftest.py, and serving loads each version through the
runtime of the framework the registry recorded: a River tree, a scikit-learn
logistic-regression pipeline, a LightGBM ``LGBMClassifier``, an ONNX graph
(skl2onnx) and a user's Python class. ``tritonclient`` checks them from outside
(in its own process: its generated protobuf modules clash with ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import pickle
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import grpc
import httpx
import numpy as np
import pytest
from river import tree
from river.datasets import synth
from support.custom_model import ThresholdModel

from driftline.artifacts import ArtifactStore
from driftline.devtools.infra import free_port
from driftline.edge.values import value_from_pb, values_to_pb
from driftline.kafkaio import provision_topics
from driftline.model_runtimes import ModelSignature, register_runtime
from driftline.model_runtimes.river_runtime import RiverRuntime
from driftline.registry.service import RegistryService
from driftline.registry_client import RegistryClient
from driftline.serving.service import serve
from driftline.settings import PlatformSettings
from driftline.v1 import feature_store_pb2_grpc, predictor_pb2, predictor_pb2_grpc

from .conftest import (
    MODEL,
    SIGNING_KEY,
    SPEC,
    ServingStack,
    StandInFeatureStore,
    _start_server,
    trained_tree,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
FEATURES = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"]
AGRAWAL_FUNCTION = 6
"""A labelling that a linear model separates too (so every framework predicts both classes)."""


# -- the models ------------------------------------------------------------------------


@functools.cache
def _training() -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    data = list(synth.Agrawal(classification_function=AGRAWAL_FUNCTION, seed=1).take(3000))
    rows = [x for x, _ in data]
    x = np.array([[float(r[f]) for f in FEATURES] for r in rows])
    return rows, x, np.array([int(y) for _, y in data])


@functools.cache
def _logistic() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, x, y = _training()
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)


@dataclass(frozen=True)
class Version:
    """A fitted model as the registry takes it: bytes, framework, format and spec."""

    framework: str
    artifact_format: str
    data: bytes
    spec: dict[str, Any]
    platform: str
    libraries: dict[str, str] = field(default_factory=dict)


def _spec(**extra: Any) -> dict[str, Any]:
    return {"featureset": "loans", "task": "binary", "features": FEATURES, **extra}


def river_version() -> Version:
    model = tree.HoeffdingTreeClassifier(grace_period=50)
    rows, _, y = _training()
    for x, label in zip(rows, y.tolist(), strict=True):
        model.learn_one(x, label)
    return Version("river", "river-pickle", pickle.dumps(model), _spec(), "river")


def sklearn_version() -> Version:
    import sklearn

    return Version(
        "sklearn", "sklearn-pickle", pickle.dumps(_logistic()), _spec(), "sklearn",
        {"scikit-learn": sklearn.__version__},
    )  # fmt: skip


def lightgbm_version() -> Version:
    import joblib
    import lightgbm
    from lightgbm import LGBMClassifier

    _, x, y = _training()
    model = LGBMClassifier(n_estimators=40, verbose=-1).fit(x, y)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return Version(
        "sklearn", "sklearn-joblib", buffer.getvalue(), _spec(), "sklearn",
        {"lightgbm": lightgbm.__version__},
    )  # fmt: skip


def onnx_version() -> Version:
    from skl2onnx import to_onnx

    _, x, _ = _training()
    proto = to_onnx(_logistic(), x[:1].astype(np.float32), options={"zipmap": False})
    return Version(
        "onnx", "onnx", proto.SerializeToString(), _spec(classes=[0, 1]), "onnxruntime_onnx"
    )


def python_version() -> Version:
    return Version(
        "python", "python-bytes", ThresholdModel.artifact("salary", 90_000.0, 15_000.0),
        _spec(python_class="support.custom_model.ThresholdModel"), "python",
    )  # fmt: skip


# -- the stack: the real registry, the stand-in feature store, serving -------------------


@dataclass
class RegistryStack:
    """The registry service and, once started, serving following one model of it."""

    settings: PlatformSettings
    registry: RegistryService
    client: RegistryClient
    name: str
    features: StandInFeatureStore
    features_port: int
    target: str = ""
    admin_url: str = ""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def register(self, v: Version) -> int:
        info = await self.client.register(
            self.name, v.data, spec=v.spec, framework=v.framework,
            artifact_format=v.artifact_format, library_versions=v.libraries, actor="test",
        )  # fmt: skip
        return info.version

    async def promote(self, version: int) -> None:
        await self.client.set_alias(
            self.name, "champion", version, actor="test", reason="framework test"
        )

    async def start_serving(self) -> None:
        """Serving on free ports, following only this test's model; returns once it serves."""
        grpc_port, admin_port = free_port(), free_port()
        cfg = self.settings.serving.model_copy(
            update={
                "grpc_port": grpc_port,
                "admin": self.settings.serving.admin.model_copy(update={"port": admin_port}),
                "features_target": f"127.0.0.1:{self.features_port}",
                "registry_target": f"127.0.0.1:{self.registry.grpc_port}",
                "signing_key": SIGNING_KEY,
                "models": [self.name],
                "prediction_log_batch": 200,
                # The registry and the stand-in share this process's event loop.
                "feature_timeout_ms": 2000.0,
            }
        )
        self.target = f"127.0.0.1:{grpc_port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        self._task = asyncio.create_task(
            serve(self.settings.model_copy(update={"serving": cfg}), self._stop)
        )

        async def ready() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    return (await http.get(f"{self.admin_url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(ready, 90, "serving to load the champion")

    async def stop_serving(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._task, 20)

    async def metric(self, needle: str) -> float:
        """A sample of serving's /metrics (0 when absent)."""
        async with httpx.AsyncClient(timeout=5) as http:
            for line in (await http.get(f"{self.admin_url}/metrics")).text.splitlines():
                if line.startswith(needle + " "):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
async def stack(
    platform_settings: PlatformSettings, tmp_path: Path
) -> AsyncIterator[RegistryStack]:
    """The registry service (serving is started by the test, when it is ready for it)."""
    settings = platform_settings.model_copy(
        update={
            "registry": platform_settings.registry.model_copy(
                update={
                    "grpc_port": 0,
                    "admin": platform_settings.registry.admin.model_copy(
                        update={"port": free_port()}
                    ),
                    "artifact_dir": tmp_path / "artifacts",
                    "signing_key": SIGNING_KEY,
                    "instance_id": uuid.uuid4().hex[:8],
                    "featuresets_dir": ROOT / "examples" / "featuresets",
                }
            )
        }
    )
    await provision_topics(settings.kafka)
    registry = RegistryService(settings)
    await registry.start()
    features = StandInFeatureStore()
    fs_server, fs_port = await _start_server(
        features, feature_store_pb2_grpc.add_FeatureStoreServicer_to_server
    )
    # Tests share driftline.models: a name of its own keeps this test's versions apart.
    name = f"loans-{uuid.uuid4().hex[:10]}"
    client = RegistryClient(f"127.0.0.1:{registry.grpc_port}", timeout_s=30)
    s = RegistryStack(settings, registry, client, name, features, fs_port)
    try:
        async with client:
            yield s
    finally:
        await s.stop_serving()
        await fs_server.stop(0)
        await registry.stop()


# -- from outside: Predict over gRPC, tritonclient in its own process --------------------


async def _predict(
    target: str, name: str, rows: list[dict[str, Any]], version: int | None = None
) -> list[predictor_pb2.PredictResponse]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        return [
            await stub.Predict(
                predictor_pb2.PredictRequest(
                    entity_id=f"applicant-{i}",
                    model_name=name,
                    features=values_to_pb(row),
                    **({"version": version} if version is not None else {}),
                ),
                timeout=10,
            )
            for i, row in enumerate(rows)
        ]


TRITON_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tc

args = json.load(sys.stdin)
client = tc.InferenceServerClient(args["url"])
model = args["model"]
meta = client.get_model_metadata(model, as_json=True)
numpy_type = {"FP64": np.float64, "INT64": np.int64}
names = [spec["name"] for spec in meta["inputs"]]


def outputs(result):
    probabilities = result.get_output("probabilities")
    return {
        "version": result.get_response().model_version,
        "raw": len(result.get_response().raw_output_contents),
        "predict": [p.decode() for p in result.as_numpy("predict").tolist()],
        "probability": result.as_numpy("probability").tolist(),
        "probabilities": result.as_numpy("probabilities").tolist(),
        "classes": json.loads(probabilities.parameters["classes"].string_param),
    }


def per_feature(rows):
    inputs = []
    for spec in meta["inputs"]:
        arr = np.array([[r[spec["name"]]] for r in rows], dtype=numpy_type[spec["datatype"]])
        tensor = tc.InferInput(spec["name"], list(arr.shape), spec["datatype"])
        tensor.set_data_from_numpy(arr)
        inputs.append(tensor)
    return outputs(client.infer(model, inputs))


out = {"meta": meta, "ready": client.is_model_ready(model)}
out["rows"] = per_feature(args["rows"])
# 256 rows as one [256, 9] FP32 matrix, as MLServer's scikit-learn users send X ...
x = np.array([[r[n] for n in names] for r in args["matrix_rows"]], dtype=np.float32)
matrix = tc.InferInput("input-0", list(x.shape), "FP32")
matrix.set_data_from_numpy(x)
out["matrix"] = outputs(client.infer(model, [matrix]))
# ... and the same float32 values as one tensor per feature.
rounded = [{n: float(v) for n, v in zip(names, row)} for row in x.tolist()]
for r in rounded:
    for spec in meta["inputs"]:
        if spec["datatype"] == "INT64":
            r[spec["name"]] = int(r[spec["name"]])
out["matrix_as_features"] = per_feature(rounded)
print(json.dumps(out))
"""


async def _triton(
    target: str, name: str, rows: list[dict[str, Any]], matrix_rows: list[Any]
) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", TRITON_SCRIPT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    payload = {"url": target, "model": name, "rows": rows, "matrix_rows": matrix_rows}
    stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(payload).encode()), 180)
    assert proc.returncode == 0, stderr.decode()
    return json.loads(stdout)


async def _serves(s: RegistryStack, version: int) -> bool:
    [answer] = await _predict(s.target, s.name, _training()[0][:1])
    return answer.model_version == version


# -- the tests ---------------------------------------------------------------------------


async def test_every_framework_is_served_through_its_runtime(stack: RegistryStack) -> None:
    versions = [
        river_version(), sklearn_version(), lightgbm_version(), onnx_version(), python_version()
    ]  # fmt: skip
    numbers = [await stack.register(v) for v in versions]
    recorded = {v.version: v for v in await stack.client.list_versions(stack.name)}
    assert [(recorded[n].framework, recorded[n].artifact_format) for n in numbers] == [
        (v.framework, v.artifact_format) for v in versions
    ]
    await stack.promote(numbers[0])
    await stack.start_serving()
    rows = [x for x, _ in synth.Agrawal(classification_function=AGRAWAL_FUNCTION, seed=21).take(64)]
    matrix_rows = [
        x for x, _ in synth.Agrawal(classification_function=AGRAWAL_FUNCTION, seed=22).take(256)
    ]
    for number, v in zip(numbers, versions, strict=True):
        if number != numbers[0]:
            await stack.promote(number)
        await wait_until(lambda n=number: _serves(stack, n), 60, f"serving to swap in v{number}")
        answers = await _predict(stack.target, stack.name, rows)
        triton = await _triton(stack.target, stack.name, rows, matrix_rows)
        what = f"{v.framework} ({v.artifact_format}) v{number}"

        # ModelMetadata: the runtime's platform and inputs.
        meta = triton["meta"]
        assert meta["platform"] == v.platform, what
        assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
            (n, "FP64" if n in ("salary", "commission", "hvalue", "loan") else "INT64", ["-1", "1"])
            for n in FEATURES
        ], what
        assert [o["name"] for o in meta["outputs"]] == ["predict", "probability", "probabilities"]
        assert triton["ready"], what

        # ModelInfer (raw, per-feature tensors) answers what Predict answers, row for row.
        out = triton["rows"]
        assert out["version"] == str(number) and out["raw"] == 3, what
        predicted = [str(value_from_pb(a.prediction)) for a in answers]
        assert {a.model_version for a in answers} == {number}, what
        assert out["predict"] == predicted, what
        # (an ONNX graph computes in float32, where one row alone and in a batch may
        # differ in the last bits)
        assert out["probability"] == pytest.approx(
            [a.probabilities[p] for a, p in zip(answers, predicted, strict=True)], abs=1e-6
        ), what
        assert out["classes"] == ["0", "1"], what
        # (River leaves out a class a leaf never saw: its probability is 0.)
        flat = [p for row in out["probabilities"] for p in row]
        assert flat == pytest.approx(
            [a.probabilities.get(c, 0.0) for a in answers for c in out["classes"]], abs=1e-6
        ), what
        assert set(predicted) == {"0", "1"}, f"{what}: both classes occur"

        # 256 rows as one [256, 9] FP32 matrix: the same answers as per-feature tensors.
        assert triton["matrix"]["version"] == triton["matrix_as_features"]["version"] == str(number)
        assert len(triton["matrix"]["predict"]) == 256
        assert triton["matrix"]["predict"] == triton["matrix_as_features"]["predict"], what
        assert triton["matrix"]["probabilities"] == triton["matrix_as_features"]["probabilities"]
        assert len(set(triton["matrix"]["predict"])) == 2, what
    loads = 'driftline_serving_model_loads_total{outcome="failed"}'
    assert await stack.metric(loads) == 0


async def test_a_tampered_artifact_is_refused_and_the_champion_keeps_serving(
    stack: RegistryStack,
) -> None:
    river = await stack.register(river_version())
    await stack.promote(river)
    sklearn = await stack.register(sklearn_version())
    lightgbm = await stack.register(lightgbm_version())
    # Serving starts after the registrations (it follows the log from its end): nothing
    # has been downloaded when one of the artifacts is changed on the registry's disk.
    info = await stack.client.get(stack.name, sklearn)
    path = ArtifactStore(stack.settings.registry.artifact_dir).path_of(info.sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    await stack.start_serving()
    invalid = 'driftline_serving_registry_events_total{outcome="invalid"}'
    assert await stack.metric(invalid) == 0

    await stack.promote(sklearn)
    await wait_until(
        lambda: _metric_at_least(stack, invalid, 1), 60, "serving to refuse the promotion"
    )
    rows = _training()[0][:20]
    answers = await _predict(stack.target, stack.name, rows)
    assert {a.model_version for a in answers} == {river}
    skipped = 'driftline_records_skipped_total{reason="processing_error",topic="driftline.models"}'
    assert await stack.metric(skipped) == 1
    # The registry has the tampered version as champion; serving keeps the one before.
    assert (await stack.client.get(stack.name, alias="champion")).version == sklearn
    # The next valid promotion is followed.
    await stack.promote(lightgbm)
    await wait_until(lambda: _serves(stack, lightgbm), 60, "serving to swap in the LightGBM model")


async def _metric_at_least(s: RegistryStack, needle: str, value: float) -> bool:
    return await s.metric(needle) >= value


async def test_hot_swap_from_river_to_lightgbm_and_back_under_load(
    stack: RegistryStack,
) -> None:
    river = await stack.register(river_version())
    lightgbm = await stack.register(lightgbm_version())
    await stack.promote(river)
    await stack.start_serving()
    rows = _training()[0][:50]
    answered: list[tuple[float, float, int]] = []  # (sent, answered, version)
    failed: list[str] = []
    stop = asyncio.Event()

    async def client(channel: grpc.aio.Channel, worker: int) -> None:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        i = 0
        while not stop.is_set():
            row = rows[i % len(rows)]
            sent = time.monotonic()
            try:
                r = await stub.Predict(
                    predictor_pb2.PredictRequest(
                        entity_id=f"c-{worker}-{i}", model_name=stack.name,
                        features=values_to_pb(row),
                    ),
                    timeout=10,
                )  # fmt: skip
            except grpc.aio.AioRpcError as exc:
                failed.append(f"{exc.code().name}: {exc.details()}")
            else:
                answered.append((sent, time.monotonic(), r.model_version))
            i += 1

    def since(t: float, version: int) -> int:
        return sum(1 for s, _, v in answered if v == version and s > t)

    async with grpc.aio.insecure_channel(stack.target) as channel:
        workers = [asyncio.create_task(client(channel, w)) for w in range(8)]
        await wait_until(lambda: len(answered) > 200, 60, "steady load")
        to_lightgbm = time.monotonic()
        await stack.promote(lightgbm)
        await wait_until(lambda: since(to_lightgbm, lightgbm) > 200, 60, "LightGBM answers")
        back = time.monotonic()
        await stack.promote(river)
        await wait_until(lambda: since(back, river) > 200, 60, "River answers again")
        stop.set()
        await asyncio.gather(*workers)

    assert failed == []  # not one non-OK status across both swaps
    assert {v for _, done, v in answered if done < to_lightgbm} == {river}
    # Each swap happens once: every request sent after the first answer of the new
    # champion is answered by it (until the next promotion).
    first_lightgbm = min(done for _, done, v in answered if v == lightgbm)
    assert {v for s, _, v in answered if first_lightgbm < s < back} == {lightgbm}
    first_back = min(done for s, done, v in answered if v == river and s > back)
    assert {v for s, _, v in answered if s > first_back} == {river}
    print(f"{len(answered)} answers and no failure across two swaps")


# -- serving's own checks, with the stand-in registry -----------------------------------


class SpyRuntime(RiverRuntime):
    """River, noting every artifact it is handed (to show what never reaches a runtime)."""

    framework = "spy-river"
    handed: ClassVar[list[bytes]] = []

    @classmethod
    def from_artifact(
        cls, data: bytes, signature: ModelSignature, spec: Mapping[str, Any]
    ) -> RiverRuntime:
        SpyRuntime.handed.append(data)
        return super().from_artifact(data, signature, spec)


async def test_serving_verifies_before_any_runtime_sees_the_bytes(
    serving_stack: ServingStack,
) -> None:
    register_runtime(SpyRuntime)
    SpyRuntime.handed.clear()
    registry = serving_stack.registry
    model = pickle.dumps(trained_tree(1, n=300))
    registry.add(3, data=model, framework="spy-river", signature="0" * 64)  # a forged signature
    registry.add(4, data=model, framework="spy-river")
    _, sha, sig = registry.artifacts[4]
    registry.artifacts[4] = (model + b"\x00", sha, sig)  # bytes changed after signing
    registry.add(5, data=model, framework="tensorflow")  # no runtime serves it
    registry.add(
        6, data=b"{}", framework="python", artifact_format="python-bytes",
        spec={**SPEC, "python_class": "nowhere.models.Risk"},
    )  # fmt: skip
    registry.add(7, data=model, framework="spy-river")  # valid
    skipped = 'driftline_records_skipped_total{reason="processing_error",topic="driftline.models"}'
    before = await _stack_metric(serving_stack, skipped)
    for version in (3, 4, 5, 6):
        await serving_stack.promote("champion", version)
    await serving_stack.promote("challenger", 7)
    challenger = f'driftline_serving_model_version{{alias="challenger",model="{MODEL}"}}'

    async def challenger_loaded() -> bool:
        return await _stack_metric(serving_stack, challenger) == 7

    # The follower applies promotions in log order: once v7 is in, 3-6 were refused.
    await wait_until(challenger_loaded, 60, "the valid version to load")
    assert SpyRuntime.handed == [model]  # the two bad artifacts never reached the runtime
    assert await _stack_metric(serving_stack, skipped) - before == 4
    [answer] = await _predict(serving_stack.target, MODEL, _training()[0][:1])
    assert answer.model_version == 1 and answer.variant == "champion"


async def _stack_metric(s: ServingStack, needle: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{s.admin_url}/metrics")).text
    for line in text.splitlines():
        if line.startswith(needle + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
