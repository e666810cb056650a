"""The README's "Bring your own model" walkthrough, run as a user runs it.

Labelled loan applications are on the harness's real Kafka broker as the platform
logs them (the features worker's ``FeatureVector`` on ``driftline.features``,
ingestion's ``ValidLabel`` on ``driftline.labels.valid``).  Then, each step a
subprocess, exactly as the README shows it:

1. ``driftline features export --model examples/byom/loans-hgb.yaml`` → train.parquet;
2. ``examples/byom/fit_and_register.py`` fits a HistGradientBoostingClassifier on it
   and registers it through the Python API, promoted to champion;
3. ``examples/byom/call_model.py`` calls it with tritonclient (one ``[n, 9]`` matrix)
   and ``driftline.v1.Predictor`` (by entity, features from the feature store; and
   with request-time features);
4. ``driftline models register`` registers the saved estimator file, ``driftline models
   promote`` makes it champion, serving swaps it in, ``call_model.py`` gets it,
   ``driftline models show`` shows the first version's lineage.

The registry is the real service (in this process, its own gRPC port and artifact
directory, its log on the broker), serving is the real service, the feature store the
stand-in of tests/integration/serving (the fixtures of test_frameworks.py).  The
README's Python blocks are checked to be the scripts' code.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
from integration.serving import test_frameworks
from integration.serving.conftest import wait_until
from integration.serving.test_frameworks import RegistryStack

from driftline.contracts.errors import InvalidArgumentError
from driftline.contracts.messages import FeatureVector, ValidLabel
from driftline.contracts.topics import FEATURES, LABELS_VALID
from driftline.devtools.scenario import ScenarioConfig, applications
from driftline.kafkaio import make_producer, send_model
from driftline.registry_client import register_model
from driftline.v1 import common_pb2, predictor_pb2, predictor_pb2_grpc
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc

ROOT = Path(__file__).resolve().parents[2]
stack = test_frameworks.stack
"""The fixture: the registry service, the stand-in feature store, serving once started."""
BYOM = ROOT / "examples" / "byom"
SPEC = BYOM / "loans-hgb.yaml"
FEATURE_NAMES = [
    "salary",
    "commission",
    "age",
    "elevel",
    "car",
    "zipcode",
    "hvalue",
    "hyears",
    "loan",
]
INTS = {"age", "elevel", "car", "zipcode", "hyears"}
N = 2400
"""Applications logged; every 8th is never labelled (the export leaves it out)."""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(DRIFTLINE_TELEMETRY__LOG_FORMAT="text", **extra)
    return env


async def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``argv`` in the repository root, as a user runs it from a checkout."""
    done = await asyncio.to_thread(
        subprocess.run, argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done


async def _log_applications(bootstrap: str) -> tuple[list[Any], datetime, datetime]:
    """The applications' feature vectors and (all but every 8th) labels on the broker,
    at event times in a window of their own; the labelled ones, and the window."""
    from driftline.settings import KafkaSettings

    start = datetime(2019, 1, 1, tzinfo=UTC) + timedelta(minutes=random.randrange(2_000_000))
    config = ScenarioConfig(
        events=N, drift_at=N, seed=random.randrange(10_000), start=start,
        interval=timedelta(seconds=1), event_id_prefix=f"byom-{uuid.uuid4().hex[:8]}",
        customers=300,
    )  # fmt: skip
    apps = list(applications(config))
    producer = make_producer(KafkaSettings(bootstrap_servers=bootstrap), "byom-it")
    await producer.start()
    labelled = []
    try:
        now = datetime.now(UTC)
        for app in apps:
            vector = FeatureVector(
                event_id=app.event_id, entity_id=app.entity_id, event_time=app.event_time,
                featureset="loans", featureset_version=1, values=app.features, produced_at=now,
            )  # fmt: skip
            await send_model(producer, FEATURES, app.entity_id, vector)
            if app.index % 8 == 7:
                continue
            labelled.append(app)
            label = ValidLabel(
                event_id=app.event_id, entity_id=app.entity_id, event_time=app.event_time,
                label=app.label, ingested_at=now, featureset="loans",
            )  # fmt: skip
            await send_model(producer, LABELS_VALID, app.entity_id, label)
        await producer.flush()
    finally:
        await producer.stop()
    return labelled, start, start + N * config.interval


def _call(target: str, name: str, train: Path) -> list[str]:
    return [sys.executable, str(BYOM / "call_model.py"), "--serving", target, "--name", name,
            "--rows", str(train), "-n", "256", "--entities", "3", "--json"]  # fmt: skip


async def _serves(target: str, name: str, version: int) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        answer = await stub.Predict(
            predictor_pb2.PredictRequest(entity_id="probe", model_name=name), timeout=10
        )
    return bool(answer.model_version == version)


def _check_calls(
    out: dict[str, Any], version: int, local: Any, train: pd.DataFrame, store: dict[str, Any]
) -> None:
    """What call_model.py got is what the fitted estimator answers for the same rows."""
    meta, infer = out["metadata"], out["model_infer"]
    assert meta["platform"] == "sklearn"
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        (f, "INT64" if f in INTS else "FP64") for f in FEATURE_NAMES
    ]
    # ModelInfer: the newest 256 rows as one matrix, answered by this version, exactly
    # as the estimator in the user's hands answers them (a column out of order would not).
    rows = train.tail(256)
    assert out["event_ids"] == rows["event_id"].tolist()
    assert infer["model_version"] == version and infer["rows"] == 256
    assert infer["classes"] == ["0", "1"]
    expected = local.predict(rows[FEATURE_NAMES])
    assert infer["predict"] == [str(p) for p in expected]
    proba = local.predict_proba(rows[FEATURE_NAMES])
    assert infer["probability"] == pytest.approx(proba.max(axis=1).tolist(), abs=1e-9)
    assert set(infer["predict"]) == {"0", "1"}
    assert infer["accuracy"] > 0.9  # it learned the rule the labels follow

    # Predict by entity: the features come from the feature store.
    by_entity = out["predict_by_entity"]
    assert [a["entity_id"] for a in by_entity] == list(
        dict.fromkeys(reversed(rows["entity_id"].tolist()))
    )[:3]
    for a in by_entity:
        values = store[a["entity_id"]]
        assert a["features"] == pytest.approx(values)
        assert set(a["feature_status"].values()) == {"FEATURE_STATUS_PRESENT"}
        assert (a["model_version"], a["variant"]) == (version, "champion")
        x = pd.DataFrame([values])[FEATURE_NAMES]
        assert a["prediction"] == int(local.predict(x)[0])
        assert a["probabilities"] == pytest.approx(
            dict(zip(["0", "1"], local.predict_proba(x)[0].tolist(), strict=True)), abs=1e-9
        )
    # Predict with request-time features: the newest row, as ModelInfer scored it.
    sent = out["predict_with_features"]
    assert sent["model_version"] == version
    assert str(sent["prediction"]) == infer["predict"][-1]
    assert sent["features"] == pytest.approx(rows[FEATURE_NAMES].iloc[-1].to_dict())


async def test_the_readme_walkthrough_exports_fits_registers_serves_and_swaps(
    stack: RegistryStack, kafka: Any, tmp_path: Path
) -> None:
    s = stack
    labelled, since, until = await _log_applications(kafka.bootstrap_servers)
    env = _env(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DRIFTLINE_REGISTRY__GRPC_PORT=str(s.registry.grpc_port),
    )
    registry = f"127.0.0.1:{s.registry.grpc_port}"
    train_path, saved = tmp_path / "train.parquet", tmp_path / "model.joblib"

    # 1. The export: the labelled examples of the window, oldest first, the spec's columns.
    done = await _run(
        [sys.executable, "-m", "driftline.cli", "features", "export", "--model", str(SPEC),
         "--since", since.isoformat(), "--until", until.isoformat(), "-o", str(train_path)],
        env,
    )  # fmt: skip
    assert f"wrote {len(labelled):,} examples of loans (9 features, model loans-hgb)" in done.stdout
    train = pd.read_parquet(train_path)
    assert list(train.columns) == ["event_id", "entity_id", "event_time", *FEATURE_NAMES, "label"]
    assert train["event_id"].tolist() == [a.event_id for a in labelled]
    assert train["label"].tolist() == [a.label for a in labelled]

    # 2. Fit and register (Python API), promoted to champion.
    done = await _run(
        [sys.executable, str(BYOM / "fit_and_register.py"), str(train_path), "--registry",
         registry, "--name", s.name, "--save", str(saved)],
        env,
    )  # fmt: skip
    assert f"registered {s.name} v1 (sklearn, sklearn-pickle; " in done.stdout
    assert f"{s.name}:champion -> v1 (was unset)" in done.stdout
    v1 = await s.client.get(s.name, version=1)
    assert (v1.framework, v1.artifact_format) == ("sklearn", "sklearn-pickle")
    assert v1.library_versions["scikit-learn"] == sklearn.__version__
    assert v1.library_versions["numpy"] == np.__version__ and "python" in v1.library_versions
    assert v1.spec["features"] == FEATURE_NAMES and v1.spec["featureset"] == "loans"
    assert v1.tags["trained_on"] == str(train_path)
    assert v1.tags["driftline.input"] == "dataframe"
    lineage = v1.lineage
    assert lineage is not None
    assert (lineage.featureset, lineage.featureset_version) == ("loans", 1)
    assert lineage.examples == len(labelled)
    assert lineage.event_time_from == labelled[0].event_time
    assert lineage.event_time_to == labelled[-1].event_time
    assert v1.metrics["accuracy"] > 0.9
    assert "champion" in v1.aliases

    # 3. Serving loads the champion; call it both ways.
    local = joblib.load(saved)
    store: dict[str, dict[str, Any]] = {}
    for row in train.to_dict("records"):  # the newest values of each entity
        store[row["entity_id"]] = {f: row[f] for f in FEATURE_NAMES}
    s.features.values.update(store)
    await s.start_serving()
    first = json.loads((await _run(_call(s.target, s.name, train_path), env)).stdout)
    _check_calls(first, 1, local, train, store)

    # Bad input gets a clear refusal naming what is wrong, as the README says.
    async with grpc.aio.insecure_channel(s.target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Predict(predictor_pb2.PredictRequest(
                entity_id="c", model_name=s.name,
                features={"age": common_pb2.Value(string_value="41")}), timeout=10)  # fmt: skip
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == "feature 'age' is INT64; got a string ('41')"
        infer = oip_grpc.GRPCInferenceServiceStub(channel)
        narrow = oip.ModelInferRequest(model_name=s.name)
        narrow.inputs.add(name="X", datatype="FP64", shape=[2, 8]).contents.fp64_contents.extend(
            [1.0] * 16
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await infer.ModelInfer(narrow, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith(
            "input 'X': shape [2, 8]; a matrix input has one column per feature of the model, "
            "in this order: [rows, 9] of salary, commission, age"
        )
    from sklearn.ensemble import HistGradientBoostingClassifier

    extra = train[FEATURE_NAMES].assign(income=1.0)
    wrong = HistGradientBoostingClassifier(max_iter=5).fit(extra, train["label"])
    with pytest.raises(InvalidArgumentError, match="needs feature 'income', which feature set "
                       "loans v1 lacks"):  # fmt: skip
        await register_model(s.client, s.name, wrong, featureset="loans", task="binary")
    assert [v.version for v in await s.client.list_versions(s.name)] == [1]

    # 4. The CLI registers the saved estimator as the next champion; serving swaps it in.
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.read_text().replace("name: loans-hgb", f"name: {s.name}"))
    done = await _run(
        [sys.executable, "-m", "driftline.cli", "models", "register", s.name, "--framework",
         "sklearn", "--artifact", str(saved), "--spec", str(spec), "--trained-on",
         str(train_path)],
        env,
    )  # fmt: skip
    assert f"registered {s.name} v2" in done.stdout
    # Promoted by a command of its own: serving prefetches a version when it is registered,
    # and a promotion that follows within milliseconds can join a prefetch that asked the
    # registry before the registry had applied the registration (a known serving race).
    done = await _run([sys.executable, "-m", "driftline.cli", "models", "promote", s.name, "2",
                       "--reason", "registered from the CLI"], env)  # fmt: skip
    assert (await s.client.get(s.name, alias="champion")).version == 2
    v2 = await s.client.get(s.name, version=2)
    assert (v2.framework, v2.artifact_format) == ("sklearn", "sklearn-joblib")
    assert v2.library_versions["scikit-learn"] == sklearn.__version__
    assert v2.library_versions["joblib"] == joblib.__version__
    assert v2.tags["trained_on"] == str(train_path)
    assert v2.spec["pipeline"] == [
        {"sklearn.ensemble.HistGradientBoostingClassifier": {"max_iter": 100, "random_state": 0}}
    ]
    await wait_until(lambda: _serves(s.target, s.name, 2), 60, "serving to swap in v2")
    second = json.loads((await _run(_call(s.target, s.name, train_path), env)).stdout)
    _check_calls(second, 2, local, train, store)
    printed = (await _run(_call(s.target, s.name, train_path)[:-1], env)).stdout  # for people
    assert "ModelInfer: 256 rows as one [256, 9] FP64 matrix -> v2, classes ['0', '1']" in printed
    assert "(features from the online store)" in printed and "by v2 (champion)" in printed

    # Piped at the default 80 columns: long lines (sha256, tags) come out whole.
    narrow = {k: v for k, v in env.items() if k != "COLUMNS"}
    shown = (await _run([sys.executable, "-m", "driftline.cli", "models", "show", s.name,
                         "--version", "1"], narrow)).stdout  # fmt: skip
    assert re.search(r"framework sklearn \(.*scikit-learn " + re.escape(sklearn.__version__), shown)
    assert f"lineage   featureset loans v1, {len(labelled)} examples" in shown
    assert f'"trained_on": "{train_path}"' in shown


def test_the_readme_python_is_the_scripts_code() -> None:
    """Every Python block of the README's "Bring your own model" section is code of
    examples/byom (line for line, indentation aside; a ``...`` line skips code), so what
    the README shows is what runs."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 2
    scripts = [[ln.strip() for ln in p.read_text().splitlines()] for p in BYOM.glob("*.py")]

    def found(block: str) -> bool:
        for code in scripts:
            at = 0
            for chunk in re.split(r"^\s*\.\.\.\s*$", block.strip(), flags=re.M):
                lines = [ln.strip() for ln in chunk.strip().splitlines()]
                starts = [i for i in range(at, len(code)) if code[i : i + len(lines)] == lines]
                if not starts:
                    break
                at = starts[0] + len(lines)
            else:
                return True
        return False

    for block in blocks:
        assert found(block), f"README block not in examples/byom/*.py:\n{block}"
