"""A user's own model class, named by import path in the model spec (like MLServer's
custom runtimes or an MLflow pyfunc)::

    framework: python
    python_class: mypackage.models.RiskModel

The class is imported from serving's environment (install its package there) and
follows the scikit-learn shape::

    class RiskModel:
        classes_ = ["low", "high"]              # classifiers with probabilities

        @classmethod
        def load(cls, artifact: bytes, spec: dict) -> "RiskModel": ...
        def predict(self, frame: pandas.DataFrame) -> Sequence: ...
        def predict_proba(self, frame: pandas.DataFrame) -> array [n, len(classes_)]  # optional

The artifact is opaque bytes the class's ``load`` reads (weights, a config, a
pickle of its own), verified by the registry's signature before ``load`` sees them.
"""

from __future__ import annotations

import importlib
import re
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

__all__ = ["PYTHON_BYTES", "PythonRuntime", "import_model_class"]

PYTHON_BYTES = "python-bytes"
"""Opaque bytes that the spec's ``python_class`` loads."""

_CLASS_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.[A-Za-z_]\w*$")


def import_model_class(path: str) -> type[Any]:
    """The class at ``package.module.Class``; :class:`FailedPreconditionError` says why not."""
    if not isinstance(path, str) or not _CLASS_PATH.match(path):
        raise FailedPreconditionError(
            f"python_class {path!r} is not an import path like 'package.module.ClassName'"
        )
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises at import
        raise FailedPreconditionError(
            f"python_class {path!r} does not import: {type(exc).__name__}: {exc}; install the "
            "package that holds it where serving runs"
        ) from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise FailedPreconditionError(f"module {module_name!r} has no class {class_name!r}")
    for method in ("load", "predict"):
        if not callable(getattr(cls, method, None)):
            raise FailedPreconditionError(f"python_class {path!r} has no {method}() method")
    return cls


class PythonRuntime(ModelRuntime):
    """An instance of the spec's ``python_class``, fed a DataFrame per batch."""

    framework = "python"
    platform = "python"
    formats = (PYTHON_BYTES,)

    def __init__(self, model: Any, signature: ModelSignature) -> None:
        classes = getattr(model, "classes_", None)
        self._proba = signature.is_classifier and callable(getattr(model, "predict_proba", None))
        if self._proba:
            if classes is None:
                raise FailedPreconditionError(
                    f"{type(model).__name__} has predict_proba but no classes_ naming its columns"
                )
            signature = signature.with_classes(list(classes))
        super().__init__(model, signature)
        self._classes = list(classes) if classes is not None else []

    @classmethod
    def from_artifact(
        cls, data: bytes, signature: ModelSignature, spec: Mapping[str, Any]
    ) -> PythonRuntime:
        """``python_class.load(data, spec)`` of the spec's class."""
        model_class = import_model_class(spec.get("python_class", ""))
        try:
            model = model_class.load(data, dict(spec))
        except Exception as exc:
            raise FailedPreconditionError(
                f"{model_class.__name__}.load raised {type(exc).__name__}: {exc}"
            ) from exc
        return cls(model, signature)

    def predict(self, batch: FeatureBatch) -> Predictions:
        """One ``predict_proba`` (or ``predict``) call with the batch as a DataFrame."""
        frame = batch.frame()
        try:
            if self._proba:
                proba = np.asarray(self.model.predict_proba(frame), dtype=np.float64)
                if proba.shape != (batch.n, len(self._classes)):
                    raise FailedPreconditionError(
                        f"{type(self.model).__name__}.predict_proba gave shape {proba.shape}, "
                        f"not ({batch.n}, {len(self._classes)})"
                    )
                labels = [self._classes[j] for j in proba.argmax(axis=1).tolist()]
                return Predictions(labels, proba, tuple(str(c) for c in self._classes))
            values = np.asarray(self.model.predict(frame))
        except (FailedPreconditionError, InvalidArgumentError):
            raise
        except Exception as exc:
            raise InvalidArgumentError(
                f"{type(self.model).__name__}.predict raised {type(exc).__name__}: {exc}"
            ) from exc
        if values.shape[:1] != (batch.n,):
            raise FailedPreconditionError(
                f"{type(self.model).__name__}.predict gave {values.shape[:1]} values for "
                f"{batch.n} rows"
            )
        if self.signature.is_classifier:
            return Predictions(values.tolist())
        return Predictions(values.astype(np.float64).tolist())
