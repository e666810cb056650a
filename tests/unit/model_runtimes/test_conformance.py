"""Every model runtime passes the same conformance suite, on real fitted models.

Cases: River (classifier, regressor), scikit-learn (an array-fitted logistic
regression, the same compiled for single rows, a DataFrame-fitted pipeline,
LightGBM's and XGBoost's scikit-learn classifiers, a regressor), ONNX (a
scikit-learn model converted with skl2onnx), a user's Python class named by import
path, and a runtime added from outside through the public extension point.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
from river import linear_model as river_linear
from river import tree
from river.datasets import synth
from support.custom_model import ThresholdModel

from driftline.contracts.errors import FailedPreconditionError
from driftline.model_runtimes import (
    FeatureBatch,
    ModelRuntime,
    ModelSignature,
    Predictions,
    register_runtime,
)
from driftline.model_runtimes.checks import CHECKS, RuntimeCase

FEATURES = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"]


@functools.cache
def _data(n: int = 600) -> tuple[list[dict[str, Any]], list[int]]:
    rows, ys = [], []
    for x, y in synth.Agrawal(seed=7).take(n):
        rows.append({k: float(v) for k, v in x.items()})
        ys.append(int(y))
    return rows, ys


def _batch(n: int = 40, missing: bool = False) -> FeatureBatch:
    rows, _ = _data()
    picked = [dict(r) for r in rows[-n:]]
    if missing:
        del picked[3]["age"]
    return FeatureBatch.from_rows(picked, FEATURES)


def _matrix() -> tuple[np.ndarray, np.ndarray]:
    rows, ys = _data()
    return np.array([[r[f] for f in FEATURES] for r in rows]), np.array(ys)


def _river_classifier() -> RuntimeCase:
    model = tree.HoeffdingTreeClassifier(grace_period=50)
    rows, ys = _data()
    for x, y in zip(rows, ys, strict=True):
        model.learn_one(x, y)
    sig = ModelSignature.of(FEATURES, task="binary")
    return RuntimeCase("river-tree", "river", "river-pickle", pickle.dumps(model), sig,
                       _batch(missing=True))  # fmt: skip


def _river_regressor() -> RuntimeCase:
    model = river_linear.LinearRegression()
    rows, ys = _data()
    for x, y in zip(rows, ys, strict=True):
        model.learn_one({k: v / 1e5 for k, v in x.items()}, float(y))
    sig = ModelSignature.of(FEATURES, task="regression")
    return RuntimeCase("river-linear", "river", "river-pickle", pickle.dumps(model), sig, _batch())


def _sklearn(estimator: Any, *, frame: bool = False, task: str = "binary") -> RuntimeCase:
    x, y = _matrix()
    if frame:
        estimator.fit(pd.DataFrame(x, columns=FEATURES), y)
    else:
        estimator.fit(x, y if task != "regression" else y.astype(float))
    sig = ModelSignature.of(FEATURES, task=task)  # type: ignore[arg-type]
    name = f"sklearn-{type(estimator).__name__}{'-frame' if frame else ''}"
    return RuntimeCase(name, "sklearn", "sklearn-pickle", pickle.dumps(estimator), sig, _batch())


def _sklearn_logistic() -> RuntimeCase:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _sklearn(make_pipeline(StandardScaler(), LogisticRegression()))


def _sklearn_logistic_compiled() -> RuntimeCase:
    """The same pipeline answering single rows through its compiled onnxruntime copy."""
    case = _sklearn_logistic()
    return RuntimeCase(f"{case.name}-compiled", case.framework, case.artifact_format,
                       case.artifact, case.signature, case.batch, compiled=True)  # fmt: skip


def _sklearn_hgb_frame() -> RuntimeCase:
    from sklearn.ensemble import HistGradientBoostingClassifier

    case = _sklearn(HistGradientBoostingClassifier(max_iter=30), frame=True)
    return RuntimeCase(case.name, case.framework, case.artifact_format, case.artifact,
                       case.signature, _batch(missing=True))  # fmt: skip


def _lightgbm() -> RuntimeCase:
    from lightgbm import LGBMClassifier

    return _sklearn(LGBMClassifier(n_estimators=20, verbose=-1))


def _xgboost() -> RuntimeCase:
    from xgboost import XGBClassifier

    return _sklearn(XGBClassifier(n_estimators=20, max_depth=3))


def _sklearn_regressor() -> RuntimeCase:
    from sklearn.linear_model import Ridge

    return _sklearn(Ridge(), task="regression")


def _onnx() -> RuntimeCase:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _matrix()
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    proto = to_onnx(model, x[:1].astype(np.float32), options={"zipmap": False})
    sig = ModelSignature.of(FEATURES, task="binary")
    return RuntimeCase("onnx-logistic", "onnx", "onnx", proto.SerializeToString(), sig, _batch(),
                       spec={"classes": [0, 1]})  # fmt: skip


def _python() -> RuntimeCase:
    sig = ModelSignature.of(FEATURES, task="binary")
    artifact = ThresholdModel.artifact("salary", 75_000.0, 10_000.0)
    return RuntimeCase("python-threshold", "python", "python-bytes", artifact, sig, _batch(),
                       spec={"python_class": "support.custom_model.ThresholdModel"})  # fmt: skip


class MeanRuntime(ModelRuntime):
    """A runtime added from outside: predicts the mean of its inputs (a regressor)."""

    framework = "test-mean"
    platform = "test-mean"
    formats = ("empty",)

    @classmethod
    def from_artifact(
        cls, data: bytes, signature: ModelSignature, spec: Mapping[str, Any]
    ) -> MeanRuntime:
        if data != b"":
            raise FailedPreconditionError("a mean model's artifact is empty")
        return cls(None, signature)

    def predict(self, batch: FeatureBatch) -> Predictions:
        return Predictions(np.nanmean(batch.matrix(), axis=1).tolist())


def _plugin() -> RuntimeCase:
    register_runtime(MeanRuntime)
    sig = ModelSignature.of(FEATURES, task="regression")
    return RuntimeCase("plugin-mean", "test-mean", "empty", b"", sig, _batch())


CASES: dict[str, Callable[[], RuntimeCase]] = {
    "river-classifier": _river_classifier,
    "river-regressor": _river_regressor,
    "sklearn-logistic": _sklearn_logistic,
    "sklearn-logistic-compiled": _sklearn_logistic_compiled,
    "sklearn-hgb-dataframe": _sklearn_hgb_frame,
    "lightgbm": _lightgbm,
    "xgboost": _xgboost,
    "sklearn-regressor": _sklearn_regressor,
    "onnx": _onnx,
    "python-class": _python,
    "plugin": _plugin,
}


@functools.cache
def _case(name: str) -> RuntimeCase:
    return CASES[name]()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", list(CASES))
def test_runtime_conformance(case: str, check: Callable[[RuntimeCase], None]) -> None:
    check(_case(case))
