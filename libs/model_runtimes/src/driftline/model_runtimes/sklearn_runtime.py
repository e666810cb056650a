"""scikit-learn estimators and pipelines, including LightGBM's and XGBoost's scikit-learn
estimators (``LGBMClassifier``, ``XGBClassifier`` …): one ``predict_proba`` (or
``predict``) call per batch.

An estimator fitted on a DataFrame (it has ``feature_names_in_``) is fed a
DataFrame with those columns, so a ``ColumnTransformer`` that selects by name
works; one fitted on an array is fed the batch's ``[n, k]`` float array in the
signature's column order, which costs nothing to build.
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
)

__all__ = ["SKLEARN_JOBLIB", "SKLEARN_PICKLE", "SklearnRuntime"]

SKLEARN_PICKLE = "sklearn-pickle"
"""A pickled estimator (``pickle.dump``)."""
SKLEARN_JOBLIB = "sklearn-joblib"
"""An estimator saved with ``joblib.dump`` (what scikit-learn's docs recommend)."""


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
