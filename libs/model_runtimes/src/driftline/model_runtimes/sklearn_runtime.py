"""scikit-learn estimators and pipelines, including LightGBM's and XGBoost's scikit-learn
estimators (``LGBMClassifier``, ``XGBClassifier`` …): one ``predict_proba`` (or
``predict``) call per batch.

An estimator fitted on a DataFrame (it has ``feature_names_in_``) is fed a
DataFrame with those columns, so a ``ColumnTransformer`` that selects by name
works; one fitted on an array is fed the batch's ``[n, k]`` float array in the
signature's column order, which costs nothing to build.

One row at a time, scikit-learn spends far more in its input checks than in the
arithmetic: a ``Pipeline(StandardScaler, LogisticRegression)`` takes ~420 µs for
one row's ``predict_proba``, River's Hoeffding tree 15 µs. :meth:`SklearnRuntime.compile`
therefore converts the estimators in :data:`EXACT_ONNX` (scalers and linear models,
whose skl2onnx graphs compute in float64 end to end) to onnxruntime, checks the
result equals scikit-learn's on probe rows, and answers single rows with it
(~25 µs). Batches stay on scikit-learn (vectorised, the checks are paid once), as
does any row with a missing value (scikit-learn's answer or error is the contract).
Tree ensembles are not compiled: onnxruntime's tree operators compare in float32,
which can send a row down another branch than scikit-learn's float64 thresholds do.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

from driftline.contracts.errors import FailedPreconditionError, InvalidArgumentError
from driftline.model_runtimes.base import (
    FeatureBatch,
    ModelRuntime,
    ModelSignature,
    Predictions,
    Scored,
)

__all__ = ["EXACT_ONNX", "SKLEARN_JOBLIB", "SKLEARN_PICKLE", "SklearnRuntime"]

SKLEARN_PICKLE = "sklearn-pickle"
"""A pickled estimator (``pickle.dump``)."""
SKLEARN_JOBLIB = "sklearn-joblib"
"""An estimator saved with ``joblib.dump`` (what scikit-learn's docs recommend)."""


EXACT_ONNX = frozenset(
    {
        "StandardScaler",
        "MinMaxScaler",
        "MaxAbsScaler",
        "RobustScaler",
        "LogisticRegression",
        "SGDClassifier",
        "LinearRegression",
        "Ridge",
        "Lasso",
        "ElasticNet",
        "SGDRegressor",
    }
)
"""scikit-learn estimators (alone or as the steps of a ``Pipeline``) that
:meth:`SklearnRuntime.compile` converts: skl2onnx turns each into float64 arithmetic
(Sub/Div/MatMul/Add/Sigmoid/Softmax), which gives scikit-learn's numbers to ~1e-15."""

PROBE_ROWS = 256
"""Rows the compiled model must answer exactly as scikit-learn does before it is used."""


def _python(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (JSON and the log want plain values)."""
    return value.item() if isinstance(value, np.generic) else value


class SklearnRuntime(ModelRuntime):
    """Any scikit-learn-API estimator: ``predict`` and, for classifiers, ``predict_proba``."""

    framework = "sklearn"
    platform = "sklearn"
    formats = (SKLEARN_PICKLE, SKLEARN_JOBLIB)

    def __init__(self, model: Any, signature: ModelSignature) -> None:
        names = getattr(model, "feature_names_in_", None)
        self._frame_columns: list[str] | None = None
        if names is not None:
            fitted = [str(n) for n in names]
            missing = sorted(set(fitted) - set(signature.names))
            if missing:
                raise FailedPreconditionError(
                    f"the estimator was fitted on column(s) {', '.join(map(repr, missing))} "
                    f"that the model's features ({', '.join(signature.names)}) do not include"
                )
            self._frame_columns = fitted
        else:
            n = getattr(model, "n_features_in_", None)
            if n is not None and int(n) != len(signature.inputs):
                raise FailedPreconditionError(
                    f"the estimator was fitted on {int(n)} columns but the model lists "
                    f"{len(signature.inputs)} features ({', '.join(signature.names)}); list them "
                    "in the order of the training matrix"
                )
        classes = getattr(model, "classes_", None)
        if signature.is_classifier:
            if classes is None:
                raise FailedPreconditionError(
                    f"the model is a {signature.task} classifier but the {type(model).__name__} "
                    "has no classes_: is it fitted, and is it a classifier?"
                )
            signature = signature.with_classes([_python(c) for c in classes])
        super().__init__(model, signature)
        self._proba = signature.is_classifier and callable(getattr(model, "predict_proba", None))
        self._classes = [_python(c) for c in classes] if classes is not None else []
        self._class_names = tuple(str(c) for c in self._classes)
        self._columns = tuple(self._frame_columns or signature.names)
        self._compiled: Any = None
        """``(onnxruntime session, input name, output name)`` once :meth:`compile` succeeds."""

    @classmethod
    def from_artifact(
        cls, data: bytes, signature: ModelSignature, spec: Mapping[str, Any]
    ) -> SklearnRuntime:
        """Load a pickled or joblib-saved (verified) estimator."""
        import joblib

        try:
            model = joblib.load(io.BytesIO(data))  # reads plain pickles too
        except Exception as exc:
            raise FailedPreconditionError(
                "the artifact is not a loadable scikit-learn estimator: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not callable(getattr(model, "predict", None)):
            raise FailedPreconditionError(
                f"the artifact holds a {type(model).__name__}, which has no predict(): it is not "
                "a scikit-learn estimator"
            )
        return cls(model, signature)

    @classmethod
    def dump(cls, model: Any) -> bytes:
        """The ``sklearn-pickle`` bytes of a fitted estimator."""
        return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)

    def _input(self, batch: FeatureBatch) -> Any:
        if self._frame_columns is None:
            return batch.matrix()
        frame = batch.frame()
        return frame[self._frame_columns]

    def compile(self) -> str:
        """Answer single rows with an onnxruntime copy of the model, when it is exact.

        Only estimators in :data:`EXACT_ONNX` (alone or as every step of a
        ``Pipeline``), numeric inputs, and — for a classifier — one with
        ``predict_proba``; the copy must then give scikit-learn's probabilities (or
        values) to 1e-9 and its labels on :data:`PROBE_ROWS` rows spread over nine
        orders of magnitude. Anything else keeps the scikit-learn path.
        """
        steps = self.model.steps if hasattr(self.model, "steps") else [("model", self.model)]
        estimators = [e for _, e in steps if e not in (None, "passthrough")]
        other = [
            type(e).__name__
            for e in estimators
            if type(e).__name__ not in EXACT_ONNX or not type(e).__module__.startswith("sklearn.")
        ]
        if other:
            return (
                f"single rows stay on scikit-learn: {', '.join(other)} has no exact compiled "
                "form (compiled: scalers and linear models)"
            )
        if any(i.datatype == "BYTES" for i in self.signature.inputs):
            return "single rows stay on scikit-learn: a BYTES input has no compiled form"
        if self.signature.is_classifier and not self._proba:
            return "single rows stay on scikit-learn: the classifier has no predict_proba"
        try:
            import onnxruntime as ort
            from skl2onnx import to_onnx
        except ImportError as exc:
            return f"single rows stay on scikit-learn: {exc.name} is not installed"
        k = len(self._columns)
        try:
            options = {"zipmap": False} if self.signature.is_classifier else None
            proto = to_onnx(
                self.model, np.zeros((1, k)), options=options,
                target_opset={"": 17, "ai.onnx.ml": 3},
            )  # fmt: skip
            so = ort.SessionOptions()
            # One row: threads cost more than they give, and serving runs many models.
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            session = ort.InferenceSession(
                proto.SerializeToString(), so, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            return f"single rows stay on scikit-learn: conversion failed ({why})"
        input_name = session.get_inputs()[0].name
        outputs = [o.name for o in session.get_outputs()]
        output = outputs[1] if self.signature.is_classifier else outputs[0]
        rng = np.random.default_rng(20261206)
        probes = rng.normal(size=(PROBE_ROWS, k)) * 10 ** rng.uniform(-3, 6, size=(PROBE_ROWS, k))
        probes[0] = 0.0
        import pandas as pd

        sk_in = (
            probes if self._frame_columns is None
            else pd.DataFrame(probes, columns=list(self._frame_columns))
        )  # fmt: skip
        got = np.asarray(session.run([output], {input_name: probes})[0], dtype=np.float64)
        if self.signature.is_classifier:
            want = np.asarray(self.model.predict_proba(sk_in), dtype=np.float64)
            same = got.shape == want.shape and bool(
                np.allclose(got, want, rtol=1e-9, atol=1e-12)
                and (got.argmax(axis=1) == want.argmax(axis=1)).all()
            )
        else:
            want = np.asarray(self.model.predict(sk_in), dtype=np.float64)
            got = got.reshape(want.shape) if got.size == want.size else got
            same = got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-9, atol=1e-9))
        if not same:
            return "single rows stay on scikit-learn: the compiled copy disagreed on probe rows"
        self._compiled = (session, input_name, output)
        return (
            f"single rows compiled to onnxruntime (float64; equal to scikit-learn on "
            f"{PROBE_ROWS} probe rows)"
        )

    @property
    def compiled(self) -> bool:
        """Whether single rows go through the compiled copy (see :meth:`compile`)."""
        return self._compiled is not None

    def predict_one(self, row: Mapping[str, Any]) -> Scored:
        """One row: through the compiled copy when there is one and no value is missing."""
        compiled = self._compiled
        if compiled is None:
            return super().predict_one(row)
        try:
            x = np.array([[row.get(n) for n in self._columns]], dtype=np.float64)
        except (TypeError, ValueError):
            return super().predict_one(row)  # the batch path names the input at fault
        if np.isnan(x).any():
            return super().predict_one(row)
        session, input_name, output = compiled
        values = session.run([output], {input_name: x})[0]
        if self.signature.is_classifier:
            probs = values[0].tolist()
            best = max(range(len(probs)), key=probs.__getitem__)
            return self._classes[best], dict(zip(self._class_names, probs, strict=True))
        return float(values.reshape(-1)[0]), {}

    def predict(self, batch: FeatureBatch) -> Predictions:
        """One ``predict_proba`` (classifiers) or ``predict`` call for the whole batch."""
        x = self._input(batch)
        try:
            if self._proba:
                proba = np.asarray(self.model.predict_proba(x), dtype=np.float64)
                best = proba.argmax(axis=1)
                labels = [self._classes[j] for j in best.tolist()]
                return Predictions(labels, proba, self._class_names)
            values = self.model.predict(x)
        except ValueError as exc:
            if "NaN" in str(exc):
                raise FailedPreconditionError(
                    f"the {type(self.model).__name__} cannot take missing values and a feature is "
                    "missing: add an imputer to the pipeline, use an estimator that takes NaN "
                    "(HistGradientBoosting, LightGBM, XGBoost), or set the model's feature "
                    "policy to 'fail'"
                ) from exc
            raise InvalidArgumentError(
                f"the {type(self.model).__name__} refused the batch: {exc}"
            ) from exc
        if self.signature.is_classifier:
            return Predictions([_python(v) for v in np.asarray(values).tolist()])
        return Predictions(np.asarray(values, dtype=np.float64).tolist())
