"""Serving loads each version through its framework's runtime and predicts batches in one call.

``load_version`` is what the registry model source runs on verified bytes; the
core's PredictBatch and ModelInfer paths make one ``predict`` call per model.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest
from river import linear_model as river_linear
from river.datasets import synth
from support.custom_model import ThresholdModel

from driftline.contracts.errors import FailedPreconditionError
from driftline.model_runtimes import FeatureBatch, Predictions
from driftline.model_runtimes.river_runtime import RiverRuntime
from driftline.serving.core import PredictCall, ServingCore
from driftline.serving.loaded_model import FeatureDatatype, LoadedModel
from driftline.serving.memory_sources import InMemoryFeatureSource, InMemoryModelSource
from driftline.serving.model_source import load_version
from driftline.serving.model_table import ModelTable
from driftline.serving.prediction_log import PredictionLog, records_of

pytestmark = pytest.mark.unit

NAME = "loans-risk"
FEATURES = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"]
SPEC: dict[str, Any] = {"featureset": "loans", "features": FEATURES, "task": "binary"}


def _matrix(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[float(r[f]) for f in FEATURES] for r in rows])


@pytest.fixture(scope="module")
def fitted_logistic() -> Any:
    """A scikit-learn scaler + logistic regression fitted on 600 Agrawal rows (an array)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = list(synth.Agrawal(seed=7).take(600))
    x, y = _matrix([r for r, _ in data]), np.array([int(t) for _, t in data])
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)


def test_each_framework_loads_through_its_runtime(
    tree_pipeline: Any,
    fitted_logistic: Any,
    loan_types: dict[str, FeatureDatatype],
    rows: list[dict[str, Any]],
) -> None:
    from skl2onnx import to_onnx

    onnx = to_onnx(
        fitted_logistic, _matrix(rows[:1]).astype(np.float32), options={"zipmap": False}
    ).SerializeToString()
    versions: dict[str, tuple[str, bytes, dict[str, Any]]] = {
        "river": ("river-pickle", pickle.dumps(tree_pipeline), SPEC),
        "sklearn": ("sklearn-pickle", pickle.dumps(fitted_logistic), SPEC),
        # A spec travels as a protobuf Struct: the classes [0, 1] arrive as doubles.
        "onnx": ("onnx", onnx, {**SPEC, "classes": [0.0, 1.0]}),
        "python": (
            "python-bytes",
            ThresholdModel.artifact("salary", 75_000.0, 10_000.0),
            {**SPEC, "python_class": "support.custom_model.ThresholdModel"},
        ),
    }
    platforms = {}
    for framework, (fmt, data, spec) in versions.items():
        runtime = load_version("'m' v1", framework, fmt, data, spec, loan_types)
        assert runtime.framework == framework
        assert runtime.names == tuple(FEATURES)
        assert [i.datatype for i in runtime.signature.inputs] == list(loan_types.values())
        platforms[framework] = runtime.platform
        predictions = runtime.predict(FeatureBatch.from_rows(rows[:20], FEATURES))
        assert len(predictions) == 20 and predictions.probabilities is not None
    assert platforms == {
        "river": "river",
        "sklearn": "sklearn",
        "onnx": "onnxruntime_onnx",
        "python": "python",
    }
    # The ONNX graph and the scikit-learn model it came from agree; labels are ints.
    sk = load_version("'m' v1", "sklearn", "", pickle.dumps(fitted_logistic), SPEC, loan_types)
    ox = load_version("'m' v2", "onnx", "onnx", onnx, versions["onnx"][2], loan_types)
    batch = FeatureBatch.from_rows(rows[:50], FEATURES)
    a, b = sk.predict(batch), ox.predict(batch)
    assert list(a.labels) == list(b.labels) and {type(v) for v in b.labels} == {int}
    assert a.classes == b.classes == ("0", "1")
    assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)  # type: ignore[arg-type]


def test_a_river_spec_without_a_task_is_settled_by_the_models_class(
    tree_pipeline: Any, loan_types: dict[str, FeatureDatatype]
) -> None:
    spec = {"featureset": "loans", "features": FEATURES}
    classifier = load_version("'m' v1", "river", "", pickle.dumps(tree_pipeline), spec, loan_types)
    assert classifier.signature.is_classifier
    regressor = river_linear.LinearRegression()
    regressor.learn_one({"salary": 1.0}, 2.0)
    loaded = load_version("'m' v2", "river", "", pickle.dumps(regressor), spec, loan_types)
    assert not loaded.signature.is_classifier
    assert isinstance(loaded.predict_one({"salary": 1.0})[0], float)


@pytest.mark.parametrize(
    ("framework", "fmt", "data", "spec", "needle"),
    [
        ("tensorflow", "", b"x", SPEC, "model 'm' v3 (tensorflow): no runtime serves framework "
         "'tensorflow'; known: onnx, python, river, sklearn"),
        ("river", "onnx", b"x", SPEC, "model 'm' v3 (river): artifact format 'onnx' is not one "
         "the river runtime reads (river-pickle)"),
        ("sklearn", "sklearn-joblib", b"not a pickle", SPEC, "model 'm' v3 (sklearn): the "
         "artifact is not a loadable scikit-learn estimator"),
        ("onnx", "onnx", b"\x08\x07garbage", SPEC, "model 'm' v3 (onnx): the artifact is not an "
         "ONNX model onnxruntime can load"),
        ("python", "python-bytes", b"{}", {**SPEC, "python_class": "nowhere.models.Risk"},
         "model 'm' v3 (python): python_class 'nowhere.models.Risk' does not import"),
        ("python", "python-bytes", b"{}",
         {**SPEC, "python_class": "support.custom_model.ThresholdModel"},
         "model 'm' v3 (python): ThresholdModel.load raised KeyError"),
        ("sklearn", "", pickle.dumps([1, 2]), {"features": FEATURES}, "model 'm' v3 (sklearn): "
         "its spec declares no task; a sklearn model's spec must say binary, multiclass or "
         "regression"),
        ("sklearn", "", pickle.dumps(object()), SPEC, "has no predict(): it is not a "
         "scikit-learn estimator"),
        ("river", "", pickle.dumps(None), {"task": "binary"},
         "which has no predict_proba_one: it is not a River classifier"),
    ],
)  # fmt: skip
def test_a_version_that_cannot_load_is_refused_naming_why(
    framework: str,
    fmt: str,
    data: bytes,
    spec: dict[str, Any],
    needle: str,
    loan_types: dict[str, FeatureDatatype],
) -> None:
    with pytest.raises(FailedPreconditionError) as err:
        load_version("'m' v3", framework, fmt, data, spec, loan_types)
    assert needle in err.value.message


def test_a_version_without_features_anywhere_is_refused() -> None:
    with pytest.raises(FailedPreconditionError, match="its spec lists no features"):
        load_version("'m' v3", "river", "", pickle.dumps(None), {"task": "binary"}, {})


class CountingRiver(RiverRuntime):
    """River, counting the rows of each call into ``predict``."""

    calls: ClassVar[list[int]] = []

    def predict(self, batch: FeatureBatch) -> Predictions:
        CountingRiver.calls.append(batch.n)
        return super().predict(batch)


@pytest.fixture
async def counted(
    tree_pipeline: Any,
    other_pipeline: Any,
    make_model: Callable[..., LoadedModel],
    loan_types: dict[str, FeatureDatatype],
) -> ServingCore:
    """A core whose champion (v1) and challenger (v2) count their batch calls."""
    source = InMemoryModelSource()
    for version, pipeline, alias in ((1, tree_pipeline, "champion"), (2, other_pipeline, "x")):
        plain = make_model(pipeline, version)
        runtime = CountingRiver(pipeline, plain.runtime.signature)
        source.add(
            LoadedModel.of_runtime(NAME, version, runtime, featureset="loans"),
            "challenger" if alias == "x" else alias,
        )
    table = ModelTable(source)
    await table.sync()
    CountingRiver.calls.clear()
    return ServingCore(table, InMemoryFeatureSource({"loans": loan_types}), PredictionLog(10_000))


async def test_model_infer_is_one_call_into_the_model_and_logs_every_row(
    counted: ServingCore, rows: list[dict[str, Any]]
) -> None:
    served, model, variant = await counted.resolve(NAME, "")
    columns = {n: [r[n] for r in rows[:256]] for n in FEATURES}
    predictions = counted.infer(
        served, model, columns, 256, variant=variant, request_id="r", entity_ids=None
    )
    assert CountingRiver.calls == [256]
    assert len(predictions) == 256
    [entry] = await counted.log.take(1000)  # one entry for the request
    logged = records_of(entry)
    assert [r.request_id for r in logged] == [f"r/{i}" for i in range(256)]
    assert [r.prediction for r in logged] == list(predictions.labels)
    assert [r.features for r in logged] == [dict(r) for r in rows[:256]]
    assert [r.probabilities for r in logged] == [p for _, p in predictions.all_scored()]


async def test_predict_batch_is_one_call_per_model_and_predict_none(
    counted: ServingCore, rows: list[dict[str, Any]]
) -> None:
    counted.set_canary(NAME, 30.0, "challenger", actor="test", reason="split the batch")
    calls = [PredictCall(f"c-{i}", NAME, features=rows[i]) for i in range(100)]
    outs = await counted.predict(calls, batch=True)
    variants = [o.variant for o in outs]
    assert {"champion", "challenger"} == set(variants)
    assert sorted(CountingRiver.calls) == sorted(
        [variants.count("champion"), variants.count("challenger")]
    )
    # Each answer is the model's own, in request order.
    for o, row in zip(outs, rows, strict=False):
        assert o.prediction == o.model.score(row)[0]
    CountingRiver.calls.clear()
    [one] = await counted.predict([PredictCall("c-1", NAME, features=rows[0])])
    # A single Predict goes straight to predict_proba_one: no batch is built.
    assert CountingRiver.calls == [] and one.prediction is not None


async def test_outputs_come_from_the_batch_predictions(
    make_model: Callable[..., LoadedModel], tree_pipeline: Any, rows: list[dict[str, Any]]
) -> None:
    from driftline.serving.inference_api import output_tensors

    river_model = make_model(tree_pipeline, 1)
    custom = LoadedModel.build(
        NAME, 2, ThresholdModel("salary", 75_000.0, 10_000.0), spec=SPEC,
        feature_types=dict.fromkeys(FEATURES, "FP64"), framework="python",
    )  # fmt: skip
    assert (river_model.platform, custom.platform) == ("river", "python")
    predictions = custom.predict(FeatureBatch.from_rows(rows, FEATURES))
    assert set(predictions.labels) == {0, 1}
    tensors = {t[0]: t for t in output_tensors(custom, predictions)}
    proba = predictions.probabilities
    assert proba is not None
    assert tensors["predict"][3] == [str(v) for v in predictions.labels]
    assert tensors["probabilities"][2] == [len(rows), 2]
    assert json.loads(tensors["probabilities"][4]["classes"]) == ["0", "1"]
    assert list(tensors["probabilities"][3]) == proba.reshape(-1).tolist()
    # The probability of the predicted class, whichever column it is.
    top = [float(p[label]) for p, label in zip(proba, predictions.labels, strict=True)]
    assert list(tensors["probability"][3]) == top


def test_rows_scored_one_by_one_are_logged_as_the_model_gave_them() -> None:
    # River names only the classes a leaf has seen: the batch's probabilities fill in 0,
    # while each row's record keeps the model's own dict.
    scored: list[Any] = [(1, {"0": 0.2, "1": 0.8}), (0, {"0": 1.0}), (None, {})]
    p = Predictions.from_scored(scored)
    assert p.classes == ("0", "1")
    assert p.probabilities is not None
    assert p.probabilities.tolist() == [[0.2, 0.8], [1.0, 0.0], [0.0, 0.0]]
    assert p.all_scored() == scored
    whole = Predictions([1, 0], np.array([[0.25, 0.75], [0.5, 0.5]]), ("0", "1"))
    assert whole.all_scored() == [(1, {"0": 0.25, "1": 0.75}), (0, {"0": 0.5, "1": 0.5})]


def test_a_batch_builds_its_row_dicts_once() -> None:
    batch = FeatureBatch.from_columns({"a": [1.0, None], "b": [2, 3]}, 2, ["a", "b", "c"])
    assert batch.rows() == [{"a": 1.0, "b": 2}, {"b": 3}]
    assert batch.rows() is batch.rows()  # River's dicts are the ones the log records
    full = FeatureBatch.from_columns({"b": np.array([2, 3]), "a": [1.0, 4.0]}, 2, ["a", "b"])
    assert full.rows() == [{"a": 1.0, "b": 2}, {"a": 4.0, "b": 3}]
