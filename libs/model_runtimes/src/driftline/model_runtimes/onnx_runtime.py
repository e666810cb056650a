"""ONNX models through onnxruntime: the safe format (no code runs at load).

Two input layouts are understood, told apart by the graph's inputs:

* **one matrix** — a single 2-D input ``[N, k]`` (what ``skl2onnx`` writes): the
  batch's features in the signature's column order, cast to the input's type;
* **one tensor per feature** — every graph input is named after a model feature.

Outputs: a classifier's label tensor and its ``[N, k]`` probabilities (convert
scikit-learn models with ``options={"zipmap": False}``; a ZipMap output of
dicts is read too, more slowly), a regressor's single value tensor.  The
classes' order is the spec's ``classes`` list, else ``0 … k-1``.
"""

from __future__ import annotations

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

__all__ = ["ONNX", "OnnxRuntime"]

ONNX = "onnx"
"""Format name of an ONNX model (``ModelProto`` bytes)."""

_NUMPY_OF = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class OnnxRuntime(ModelRuntime):
    """An ``onnxruntime.InferenceSession`` on one thread (serving runs one per core)."""

    framework = "onnx"
    platform = "onnxruntime_onnx"
    formats = (ONNX,)

    def __init__(self, model: Any, signature: ModelSignature) -> None:
        super().__init__(model, signature)
        inputs = model.get_inputs()
        names = set(signature.names)
        if len(inputs) == 1 and inputs[0].name not in names:
            shape = inputs[0].shape
            if len(shape) != 2:
                raise FailedPreconditionError(
                    f"the ONNX model's one input {inputs[0].name!r} is shaped {shape}; a matrix "
                    "input is [N, k] with one column per feature"
                )
            k = shape[1]
            if isinstance(k, int) and k != len(signature.inputs):
                raise FailedPreconditionError(
                    f"the ONNX model's input {inputs[0].name!r} takes {k} columns but the model "
                    f"lists {len(signature.inputs)} features ({', '.join(signature.names)})"
                )
            self._matrix: tuple[str, Any] | None = (inputs[0].name, _dtype(inputs[0]))
            self._columns: list[tuple[str, Any, int]] = []
        else:
            unknown = [i.name for i in inputs if i.name not in names]
            if unknown:
                raise FailedPreconditionError(
                    f"the ONNX model's input(s) {', '.join(map(repr, unknown))} are not features "
                    f"of the model ({', '.join(signature.names)})"
                )
            self._matrix = None
            self._columns = [(i.name, _dtype(i), len(i.shape)) for i in inputs]
        outputs = model.get_outputs()
        self._output_names = [o.name for o in outputs]
        self._label_output: str | None = None
        self._proba_output: str | None = None
        if signature.is_classifier:
            for o in outputs:
                if "prob" in o.name.lower():
                    self._proba_output = o.name
                elif self._label_output is None:
                    self._label_output = o.name
            if self._label_output is None and self._proba_output is None:
                raise FailedPreconditionError("the ONNX classifier has no outputs")
        elif len(outputs) < 1:
            raise FailedPreconditionError("the ONNX regressor has no outputs")

    @classmethod
    def from_artifact(
        cls, data: bytes, signature: ModelSignature, spec: Mapping[str, Any]
    ) -> OnnxRuntime:
        """An inference session of the model bytes; the spec's ``classes`` name the classes."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise FailedPreconditionError(
                f"the artifact is not an ONNX model onnxruntime can load: {type(exc).__name__}: "
                f"{str(exc)[:300]}"
            ) from exc
        classes = spec.get("classes")
        if signature.is_classifier and isinstance(classes, list) and classes:
            signature = signature.with_classes(classes)
        return cls(session, signature)

    @classmethod
    def dump(cls, model: Any) -> bytes:
        """The bytes of an ``onnx.ModelProto`` (or bytes as they are)."""
        if isinstance(model, bytes | bytearray):
            return bytes(model)
        return bytes(model.SerializeToString())

    def _feed(self, batch: FeatureBatch) -> dict[str, Any]:
        if self._matrix is not None:
            name, dtype = self._matrix
            return {name: batch.matrix().astype(dtype, copy=False)}
        feed: dict[str, Any] = {}
        for name, dtype, rank in self._columns:
            values = batch.column(name)
            if any(v is None for v in values):
                raise FailedPreconditionError(
                    f"input {name!r} is missing in a row and the ONNX model takes no missing "
                    "values per-feature; set the model's feature policy to 'fail' or impute it"
                )
            try:
                array = np.asarray(values, dtype=dtype)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"input {name!r}: {exc}") from None
            feed[name] = array.reshape(-1, 1) if rank == 2 else array
        return feed

    def predict(self, batch: FeatureBatch) -> Predictions:
        """One ``session.run`` for the whole batch."""
        try:
            results = self.model.run(None, self._feed(batch))
        except (FailedPreconditionError, InvalidArgumentError):
            raise
        except Exception as exc:
            raise InvalidArgumentError(
                f"onnxruntime refused the batch: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        by_name = dict(zip(self._output_names, results, strict=True))
        if not self.signature.is_classifier:
            values = np.asarray(results[0], dtype=np.float64).reshape(batch.n)
            return Predictions(values.tolist())
        proba = by_name.get(self._proba_output) if self._proba_output else None
        classes = self.signature.classes
        if proba is not None and isinstance(proba, list):  # ZipMap: one dict per row
            keys = list(proba[0]) if proba else []
            proba = np.array([[row[k] for k in keys] for row in proba], dtype=np.float64)
            classes = tuple(keys) if classes is None else classes
        if proba is not None:
            proba = np.asarray(proba, dtype=np.float64)
            names = classes if classes is not None else tuple(range(proba.shape[1]))
            if len(names) != proba.shape[1]:
                raise FailedPreconditionError(
                    f"the ONNX model gives {proba.shape[1]} class probabilities but its spec "
                    f"lists {len(names)} classes"
                )
            if self._label_output is not None:
                labels = [_python(v) for v in np.asarray(by_name[self._label_output]).reshape(-1)]
            else:
                labels = [_python(names[j]) for j in proba.argmax(axis=1).tolist()]
            return Predictions(labels, proba, tuple(str(c) for c in names))
        assert self._label_output is not None
        return Predictions(
            [_python(v) for v in np.asarray(by_name[self._label_output]).reshape(-1)]
        )


def _dtype(node: Any) -> Any:
    dtype = _NUMPY_OF.get(node.type)
    if dtype is None:
        raise FailedPreconditionError(
            f"the ONNX model's input {node.name!r} is {node.type}; supported: "
            f"{', '.join(sorted(_NUMPY_OF))}"
        )
    return dtype
