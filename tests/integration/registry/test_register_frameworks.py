"""Models trained elsewhere, registered with the real registry over the real broker.

Every framework through the Python API (scikit-learn pickle and joblib, LightGBM,
XGBoost, ONNX from skl2onnx, a custom class by import path); scikit-learn and ONNX
through ``driftline models register`` run as a separate process, an outside client;
mismatched signatures refused with INVALID_ARGUMENT and nothing registered.  Each
registered artifact is downloaded, its signature verified and loaded by its runtime,
which predicts: what serving will do with it.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from onnx import TensorProto
from skl2onnx import to_onnx
from unit.registry.fitted_models import (
    FEATURES,
    PYTHON_CLASS,
    joblibbed,
    lightgbm_model,
    loans_xy,
    onnx_matrix,
    onnx_per_feature,
    pickled,
    python_artifact,
    sklearn_frame,
    sklearn_logistic,
    write_featuresets,
    xgboost_model,
)

from driftline.artifacts import digest, verify
from driftline.contracts.errors import InvalidArgumentError, NotFoundError
from driftline.model_runtimes import FeatureBatch, ModelSignature, load_runtime
from driftline.registry.service import RegistryService
from driftline.registry_api.convert import struct_from_dict
from driftline.registry_api.models import SKLEARN_INPUT_TAG, ModelVersionInfo
from driftline.registry_client import RegistryClient, TrainedOn, register_model
from driftline.v1 import registry_pb2, registry_pb2_grpc

from .conftest import SIGNING_KEY, StartRegistry, client_of, model_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "byom-token"


@pytest.fixture
def featuresets(tmp_path: Path) -> Path:
    return write_featuresets(tmp_path / "featuresets")


async def start(start_registry: StartRegistry, featuresets: Path) -> RegistryService:
    return await start_registry(token=TOKEN, featuresets_dir=featuresets)


async def served_predictions(client: RegistryClient, info: ModelVersionInfo) -> list[Any]:
    """Download, verify and load the version as serving does; predict two loans rows."""
    data, meta = await client.download(info.name, version=info.version)
    verify(data, meta.sha256, meta.signature, SIGNING_KEY)
    spec = meta.model_version.spec
    signature = ModelSignature.of(spec["features"], task=spec["task"])
    runtime = load_runtime(
        meta.model_version.framework, meta.artifact_format, data, signature, spec
    )
    x, _ = loans_xy()
    rows = [{f: float(v) for f, v in zip(FEATURES, row, strict=True)} for row in x[:2]]
    return list(runtime.predict(FeatureBatch.from_rows(rows, signature.names)).labels)


async def test_every_framework_registers_through_the_python_api(
    start_registry: StartRegistry, featuresets: Path, tmp_path: Path
) -> None:
    service = await start(start_registry, featuresets)
    x, _ = loans_xy()
    proto = to_onnx(sklearn_logistic(), x[:1].astype(np.float32), options={"zipmap": False})
    cases: list[tuple[str, Any, dict[str, Any], str, str]] = [
        # (label, model, keyword arguments, framework, format)
        ("sklearn-pickle", sklearn_logistic(), {"features": FEATURES}, "sklearn", "sklearn-pickle"),
        (
            "sklearn-joblib",
            joblibbed(sklearn_logistic(), tmp_path / "m.joblib"),
            {"features": FEATURES, "framework": "sklearn", "artifact_format": "sklearn-joblib"},
            "sklearn",
            "sklearn-joblib",
        ),
        ("sklearn-dataframe", sklearn_frame(), {}, "sklearn", "sklearn-pickle"),
        ("lightgbm", lightgbm_model(), {}, "sklearn", "sklearn-pickle"),
        ("xgboost", xgboost_model(), {"features": FEATURES}, "sklearn", "sklearn-pickle"),
        ("onnx", proto, {"features": FEATURES, "classes": [0, 1]}, "onnx", "onnx"),
        (
            "python",
            python_artifact(),
            {"framework": "python", "python_class": PYTHON_CLASS},
            "python",
            "python-bytes",
        ),
    ]
    async with client_of(service, token=TOKEN) as client:
        for label, model, kwargs, framework, fmt in cases:
            name = model_name()
            done = await register_model(
                client,
                name,
                model,
                featureset="loans",
                task="binary",
                trained_on=TrainedOn(export=f"{label}.parquet", examples=400),
                promote="champion",
                actor="notebook",
                featuresets=featuresets,
                **kwargs,
            )
            v = done.version
            assert (v.version, v.framework, v.artifact_format) == (1, framework, fmt), label
            assert done.alias == "champion" and v.aliases == ["champion"], label
            assert v.library_versions["python"], label
            assert v.tags["trained_on"] == f"{label}.parquet"
            assert v.lineage is not None and (v.lineage.featureset, v.lineage.examples) == (
                "loans",
                400,
            )
            # What the registry keeps is what a later reader gets.
            again = await client.get(name, alias="champion")
            assert (again.framework, again.library_versions, again.spec) == (
                v.framework,
                v.library_versions,
                v.spec,
            )
            assert [m.framework for m in await client.list_models() if m.name == name] == [
                framework
            ]
            labels = await served_predictions(client, again)
            assert len(labels) == 2 and all(lbl in (0, 1) for lbl in labels), (label, labels)
            if framework == "sklearn":
                lib = (
                    "lightgbm"
                    if label == "lightgbm"
                    else "xgboost"
                    if label == "xgboost"
                    else "scikit-learn"
                )
                assert lib in v.library_versions, (label, v.library_versions)
            if label == "sklearn-dataframe":
                assert v.spec["features"] == ["salary", "age", "loan", "hvalue", "elevel"]
                assert v.tags[SKLEARN_INPUT_TAG] == "dataframe"
            if label == "onnx":
                assert v.library_versions["skl2onnx"]


async def test_mismatched_signatures_are_refused_and_nothing_is_registered(
    start_registry: StartRegistry, featuresets: Path
) -> None:
    service = await start(start_registry, featuresets)
    name = model_name()
    async with client_of(service, token=TOKEN) as client:
        first = await register_model(
            client, name, sklearn_logistic(), featureset="loans", task="binary", features=FEATURES
        )
        before = await client.list_versions(name)
        assert [v.version for v in before] == [first.version.version]

        # A feature the feature set lacks, through the client.
        lacking = {
            "name": name,
            "featureset": "loans",
            "task": "binary",
            "framework": "sklearn",
            "features": [*FEATURES[:8], "income"],
        }
        with pytest.raises(
            InvalidArgumentError, match="needs feature 'income', which feature set loans v1 lacks"
        ):
            await client.register(
                name, pickled(sklearn_logistic()), spec=lacking, artifact_format="sklearn-pickle"
            )

        # An ONNX input width that does not match the features, over the raw gRPC API.
        narrow = onnx_matrix(columns=4)
        metadata = registry_pb2.RegisterVersionMetadata(
            model_name=name,
            framework="onnx",
            artifact_format="onnx",
            spec=struct_from_dict(
                {"name": name, "featureset": "loans", "task": "binary", "features": FEATURES}
            ),
            sha256=digest(narrow),
            size_bytes=len(narrow),
        )

        async def upload() -> Any:
            yield registry_pb2.RegisterVersionRequest(metadata=metadata)
            yield registry_pb2.RegisterVersionRequest(chunk=narrow)

        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RegisterVersion(
                    upload(), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=20
                )
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "input 'X' takes 4 columns but the model reads 9 features" in str(
            info.value.details()
        )

        # A string feature into a per-feature ONNX input of floats, and an unknown framework.
        floats = onnx_per_feature({"amount": TensorProto.DOUBLE, "city": TensorProto.FLOAT})
        shops = {
            "name": name,
            "featureset": "shops",
            "task": "binary",
            "framework": "onnx",
            "features": ["amount", "city"],
        }
        with pytest.raises(
            InvalidArgumentError, match="feature 'city' is a string in feature set shops"
        ):
            await client.register(name, floats, spec=shops)
        with pytest.raises(InvalidArgumentError, match="framework 'tensorflow' is not one"):
            await client.register(name, b"weights", framework="tensorflow")

        assert await client.list_versions(name) == before

    # A model whose first registration is refused does not exist afterwards.
    other = model_name()
    async with client_of(service, token=TOKEN) as client:
        with pytest.raises(InvalidArgumentError, match="takes 4 columns"):
            await register_model(
                client,
                other,
                narrow,
                featureset="loans",
                task="binary",
                framework="onnx",
                features=FEATURES,
            )
        with pytest.raises(NotFoundError):
            await client.list_versions(other)


# -- the CLI, as an outside process -------------------------------------------------------


def cli_env(service: RegistryService, featuresets: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_REGISTRY__GRPC_HOST="127.0.0.1",
        DRIFTLINE_REGISTRY__GRPC_PORT=str(service.grpc_port),
        DRIFTLINE_REGISTRY__TOKEN=TOKEN,
        DRIFTLINE_REGISTRY__FEATURESETS_DIR=str(featuresets),
        COLUMNS="250",
    )
    return env


async def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "driftline.cli", "models", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def spec_file(directory: Path, name: str, framework: str, extra: str = "") -> Path:
    path = directory / f"{framework}.yaml"
    path.write_text(
        f"# trained in a notebook\nname: {name}\nfeatureset: loans\ntask: binary\n"
        f"framework: {framework}\nfeatures: [{', '.join(FEATURES)}]\n{extra}"
    )
    return path


async def test_the_cli_registers_sklearn_and_onnx_files_as_an_outside_process(
    start_registry: StartRegistry, featuresets: Path, tmp_path: Path
) -> None:
    service = await start(start_registry, featuresets)
    env = cli_env(service, featuresets)
    work = tmp_path / "team"
    work.mkdir()
    sk_name, onnx_name = model_name(), model_name()

    joblib_file = work / "model.joblib"
    joblibbed(lightgbm_model(), joblib_file)
    sk = await cli(
        env,
        work,
        "register",
        sk_name,
        "--framework",
        "sklearn",
        "--artifact",
        str(joblib_file),
        "--spec",
        str(spec_file(work, sk_name, "sklearn")),
        "--promote",
        "champion",
        "--trained-on",
        "train.parquet",
        "--metric",
        "auc=0.91",
    )
    assert sk.returncode == 0, sk.stderr
    match = re.search(rf"registered {sk_name} v1  sha256 ([0-9a-f]{{64}})", sk.stdout)
    assert match is not None, sk.stdout
    assert match.group(1) == digest(joblib_file.read_bytes())
    assert "sklearn (sklearn-joblib" in sk.stdout and "lightgbm " in sk.stdout
    assert f"{sk_name}:champion -> v1 (was unset)" in sk.stdout

    onnx_file = work / "model.onnx"
    onnx_file.write_bytes(onnx_matrix())
    ox = await cli(
        env,
        work,
        "register",
        onnx_name,
        "--framework",
        "onnx",
        "--artifact",
        str(onnx_file),
        "--spec",
        str(spec_file(work, onnx_name, "onnx", "classes: [0, 1]\n")),
    )
    assert ox.returncode == 0, ox.stderr
    assert f"registered {onnx_name} v1  sha256 {digest(onnx_file.read_bytes())}" in ox.stdout
    assert "onnx (onnx" in ox.stdout and "skl2onnx " in ox.stdout

    async with client_of(service) as client:
        v = await client.get(sk_name, alias="champion")
        assert (v.framework, v.artifact_format, v.metrics) == (
            "sklearn",
            "sklearn-joblib",
            {"auc": 0.91},
        )
        assert v.tags["trained_on"] == "train.parquet"
        # The lineage names the feature set the CLI checked the model against (not v0).
        assert v.lineage is not None
        assert (v.lineage.featureset, v.lineage.featureset_version) == ("loans", 1)
        assert "lightgbm" in v.library_versions and "scikit-learn" in v.library_versions
        assert await served_predictions(client, v)
        o = await client.get(onnx_name)
        assert (o.framework, o.spec["classes"]) == ("onnx", [0, 1])
        assert await served_predictions(client, o)

    listed = await cli(env, work, "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if sk_name in line)
    assert "sklearn" in row and "champion=v1" in row
    shown = await cli(env, work, "show", onnx_name)
    assert shown.returncode == 0, shown.stderr
    assert "framework onnx (" in shown.stdout and "skl2onnx" in shown.stdout


async def test_the_cli_refuses_a_bad_spec_locally_and_reports_the_registrys_refusal(
    start_registry: StartRegistry, featuresets: Path, tmp_path: Path
) -> None:
    service = await start(start_registry, featuresets)
    env = cli_env(service, featuresets)
    name = model_name()
    model_file = tmp_path / "model.pkl"
    model_file.write_bytes(pickled(sklearn_logistic()))

    # A spec with a wrong key: exit 2 with the file and line, nothing sent.
    bad = spec_file(tmp_path, name, "sklearn", "metrik: Accuracy\n")
    out = await cli(
        env, tmp_path, "register", name, "--artifact", str(model_file), "--spec", str(bad)
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{bad}:7: metrik: Extra inputs are not permitted" in out.stderr
    # The spec is for another model: exit 2 naming the line of `name:`.
    other = await cli(
        env,
        tmp_path,
        "register",
        f"{name}-x",
        "--artifact",
        str(model_file),
        "--spec",
        str(spec_file(tmp_path, name, "sklearn")),
    )
    assert (
        other.returncode == 2
        and f"sklearn.yaml:2: name: the spec is for model {name!r}" in other.stderr
    )
    # An estimator fitted on 9 columns against a spec of 2: exit 2, found before upload.
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(
        f"name: {name}\nfeatureset: loans\ntask: binary\nframework: sklearn\n"
        "features: [salary, age]\n"
    )
    local = await cli(
        env, tmp_path, "register", name, "--artifact", str(model_file), "--spec", str(narrow)
    )
    assert local.returncode == 2 and "fitted on 9 columns but the spec lists 2" in local.stderr

    # What only the registry can see: an ONNX width that does not fit the feature set's
    # features (the spec names none). Exit 1 with the registry's reason.
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(onnx_matrix())
    fs_spec = tmp_path / "all.yaml"
    fs_spec.write_text(f"name: {name}\nfeatureset: loans\ntask: binary\nframework: onnx\n")
    refused = await cli(
        env, tmp_path, "register", name, "--artifact", str(onnx_file), "--spec", str(fs_spec)
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "input 'X' takes 9 columns but the model reads 16 features" in refused.stderr
    async with client_of(service) as client:
        with pytest.raises(NotFoundError):
            await client.list_versions(name)
