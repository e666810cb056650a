"""scikit-learn's compiled single-row path: exact estimators go through onnxruntime,
give scikit-learn's own answers, and everything else stays on scikit-learn.

The path exists because scikit-learn's per-call input checks cost ~420 µs for one
row of a scaler + logistic regression (the bench's Predict c=1 figure); these tests
check what it answers, not how fast.
"""

from __future__ import annotations

import functools
import logging
import math
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from river.datasets import synth

from driftline.contracts.errors import FailedPreconditionError, InvalidArgumentError
from driftline.model_runtimes import FeatureBatch, ModelSignature
from driftline.model_runtimes.sklearn_runtime import EXACT_ONNX, SklearnRuntime

pytestmark = pytest.mark.unit

FEATURES = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"]


@functools.cache
def _data() -> tuple[list[dict[str, float]], np.ndarray, np.ndarray]:
    rows, ys = [], []
    for x, y in synth.Agrawal(seed=3).take(800):
        rows.append({k: float(v) for k, v in x.items()})
        ys.append(int(y))
    x = np.array([[r[f] for f in FEATURES] for r in rows])
    return rows, x, np.array(ys)


def _estimator(name: str) -> tuple[Any, str]:
    """A fitted pipeline whose last (or only) step is ``name``, with its task."""
    from sklearn import linear_model, preprocessing
    from sklearn.pipeline import make_pipeline

    _, x, y = _data()
    scalers = {"StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler"}
    if name in scalers:
        est = make_pipeline(
            getattr(preprocessing, name)(), linear_model.LogisticRegression(max_iter=1000)
        )
        return est.fit(x, y), "binary"
    if name == "LogisticRegression":  # three classes: the softmax branch
        multi = np.digitize(x[:, 0], [50_000.0, 100_000.0])
        est = make_pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
        return est.fit(x, multi), "multiclass"
    if name == "SGDClassifier":
        est = make_pipeline(
            preprocessing.StandardScaler(), linear_model.SGDClassifier(loss="log_loss")
        )
        return est.fit(x, y), "binary"
    target = x[:, 0] / 1000 + x[:, 2]
    return make_pipeline(preprocessing.StandardScaler(), getattr(linear_model, name)()).fit(
        x, target
    ), "regression"


def _runtime(model: Any, task: str) -> SklearnRuntime:
    sig = ModelSignature.of(FEATURES, task=task)  # type: ignore[arg-type]
    return SklearnRuntime.from_artifact(pickle.dumps(model), sig, {})


@pytest.mark.parametrize("name", sorted(EXACT_ONNX))
def test_each_exact_estimator_compiles_and_answers_as_scikit_learn(name: str) -> None:
    model, task = _estimator(name)
    plain, compiled = _runtime(model, task), _runtime(model, task)
    outcome = compiled.compile()
    assert compiled.compiled, outcome
    assert "onnxruntime" in outcome
    rows, _, _ = _data()
    batch = plain.predict(FeatureBatch.from_rows(rows[:60], FEATURES))
    for i, row in enumerate(rows[:60]):
        label, probs = compiled.predict_one(row)
        want_label, want_probs = plain.predict_one(row)
        assert type(label) is type(want_label)
        if task == "regression":  # float64 sums in another order: equal to the last bits
            assert math.isclose(label, want_label, rel_tol=1e-12), (i, label, want_label)
            assert math.isclose(label, batch.scored(i)[0], rel_tol=1e-12)
        else:
            assert label == want_label == batch.scored(i)[0], (i, label, want_label)
        assert probs.keys() == want_probs.keys()
        for c, p in probs.items():
            assert math.isclose(p, want_probs[c], rel_tol=1e-9, abs_tol=1e-12), (i, c, p)


def test_single_rows_do_not_call_scikit_learn_once_compiled() -> None:
    model, task = _estimator("StandardScaler")
    runtime = _runtime(model, task)
    runtime.compile()
    rows, _, _ = _data()
    want = runtime.predict_one(rows[0])

    def refuse(*_: Any) -> Any:
        raise AssertionError("scikit-learn was called for a single row")

    runtime.model.predict_proba = refuse
    assert runtime.predict_one(rows[0]) == want
    with pytest.raises(AssertionError, match="scikit-learn was called"):
        runtime.predict(FeatureBatch.from_rows(rows[:3], FEATURES))  # batches stay on it


def test_a_missing_or_bad_value_gets_scikit_learns_answer() -> None:
    model, task = _estimator("StandardScaler")
    runtime = _runtime(model, task)
    runtime.compile()
    rows, _, _ = _data()
    missing = {k: v for k, v in rows[0].items() if k != "age"}
    with pytest.raises(FailedPreconditionError, match="cannot take missing values"):
        runtime.predict_one(missing)
    with pytest.raises(InvalidArgumentError, match="'car'"):
        runtime.predict_one({**rows[0], "car": "sedan"})


def test_a_dataframe_fitted_pipeline_compiles_in_its_column_order() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows, x, y = _data()
    order = list(reversed(FEATURES))  # fitted in another order than the model lists
    frame = pd.DataFrame(x, columns=FEATURES)[order]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, y)
    plain, compiled = _runtime(model, "binary"), _runtime(model, "binary")
    assert compiled.compile() and compiled.compiled
    for row in rows[:40]:
        label, probs = compiled.predict_one(row)
        want_label, want_probs = plain.predict_one(row)
        assert label == want_label
        assert all(math.isclose(probs[c], want_probs[c], rel_tol=1e-9) for c in probs)


@pytest.mark.parametrize("kind", ["hgb", "lightgbm", "bytes-input"])
def test_what_is_not_exact_stays_on_scikit_learn_and_says_why(kind: str) -> None:
    from lightgbm import LGBMClassifier
    from sklearn.ensemble import HistGradientBoostingClassifier

    _, x, y = _data()
    sig = ModelSignature.of(FEATURES, task="binary")
    if kind == "hgb":
        model, why = HistGradientBoostingClassifier(max_iter=10).fit(x, y), "HistGradientBoosting"
    elif kind == "lightgbm":
        model, why = LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y), "LGBMClassifier"
    else:
        model, why = _estimator("StandardScaler")[0], "BYTES input"
        sig = ModelSignature.of(FEATURES, task="binary", datatypes={"car": "BYTES"})
    runtime = SklearnRuntime(model, sig)
    outcome = runtime.compile()
    assert not runtime.compiled
    assert "stay on scikit-learn" in outcome and why in outcome, outcome


def test_serving_compiles_at_load_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    from driftline.serving.model_source import load_version

    model, _ = _estimator("StandardScaler")
    spec = {"featureset": "loans", "features": FEATURES, "task": "binary"}
    types = dict.fromkeys(FEATURES, "FP64")
    with caplog.at_level(logging.INFO, logger="driftline.serving.model_source"):
        runtime = load_version("'m' v1", "sklearn", "", pickle.dumps(model), spec, types)  # type: ignore[arg-type]
    assert isinstance(runtime, SklearnRuntime) and runtime.compiled
    assert "single rows compiled to onnxruntime" in caplog.text
    off = load_version(
        "'m' v1",
        "sklearn",
        "",
        pickle.dumps(model),
        spec,
        types,
        compile_model=False,  # type: ignore[arg-type]
    )
    assert isinstance(off, SklearnRuntime) and not off.compiled
