"""The runtime boundary: what every model framework is to serving, training and the registry.

A :class:`ModelRuntime` is built from a *verified* artifact (the registry's
signature is checked before the bytes reach :meth:`ModelRuntime.from_artifact`),
predicts a whole :class:`FeatureBatch` in one call into the model, and describes
its inputs and outputs.  One runtime per framework (River, scikit-learn with the
LightGBM and XGBoost scikit-learn estimators, ONNX, a user's own Python class),
chosen by the framework the registry recorded for the version, never by
guessing from the bytes (see :mod:`driftline.model_runtimes.catalog`).

>>> sig = ModelSignature.of(["salary", "age"], task="binary", datatypes={"age": "INT64"})
>>> [(i.name, i.datatype) for i in sig.inputs], sig.is_classifier
([('salary', 'FP64'), ('age', 'INT64')], True)
>>> batch = FeatureBatch.from_rows([{"salary": 1.5, "age": 3}, {"age": 4}], sig.names)
>>> batch.matrix().tolist()
[[1.5, 3.0], [nan, 4.0]]
>>> batch.rows()
[{'salary': 1.5, 'age': 3}, {'age': 4}]
"""

from __future__ import annotations

import abc
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from driftline.contracts.errors import FailedPreconditionError, InvalidArgumentError

__all__ = [
    "DATATYPES",
    "Column",
    "Datatype",
    "FeatureBatch",
    "ModelInput",
    "ModelRuntime",
    "ModelSignature",
    "Predictions",
    "Scored",
    "Task",
    "TensorSpec",
]

Task = Literal["binary", "multiclass", "regression"]
Datatype = Literal["FP64", "INT64", "BYTES", "BOOL"]
"""The Open Inference Protocol datatype a model input is exchanged as."""
DATATYPES: tuple[Datatype, ...] = ("FP64", "INT64", "BYTES", "BOOL")

Column = Sequence[Any] | np.ndarray
"""One feature's values, row by row: a list (None: missing) or a 1-D numeric array."""

Scored = tuple[Any, dict[str, float]]
"""One row's ``(prediction, probabilities by str(class))``; the prediction is None when the
model cannot answer yet (an online model that has learnt nothing)."""


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One input of a model: a feature's name and the datatype it is exchanged as."""

    name: str
    datatype: Datatype = "FP64"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """An input or output tensor as the Open Inference Protocol describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSignature:
    """What a model takes and gives: its inputs (in column order), task and classes.

    ``classes`` is the class order of a classifier's probabilities when the model
    knows it at load (scikit-learn's ``classes_``); None when it comes with each
    prediction (River).
    """

    inputs: tuple[ModelInput, ...]
    task: Task
    classes: tuple[Any, ...] | None = None

    @classmethod
    def of(
        cls,
        names: Iterable[str],
        *,
        task: Task,
        datatypes: Mapping[str, Datatype] | None = None,
        classes: Sequence[Any] | None = None,
    ) -> ModelSignature:
        """A signature from feature names (datatypes default to FP64)."""
        types = datatypes or {}
        inputs = tuple(ModelInput(n, types.get(n, "FP64")) for n in names)
        if not inputs:
            raise FailedPreconditionError("a model needs at least one input feature")
        seen: set[str] = set()
        for i in inputs:
            if i.name in seen:
                raise InvalidArgumentError(f"input {i.name!r} is listed twice")
            seen.add(i.name)
            if i.datatype not in DATATYPES:
                raise InvalidArgumentError(
                    f"input {i.name!r}: datatype {i.datatype!r} is not one of "
                    f"{', '.join(DATATYPES)}"
                )
        return cls(inputs, task, tuple(classes) if classes is not None else None)

    @property
    def names(self) -> tuple[str, ...]:
        """The input names, in column order."""
        return tuple(i.name for i in self.inputs)

    @property
    def is_classifier(self) -> bool:
        """True for binary and multiclass models."""
        return self.task != "regression"

    def with_classes(self, classes: Sequence[Any] | None) -> ModelSignature:
        """The same signature with the classifier's class order known."""
        return ModelSignature(
            self.inputs, self.task, tuple(classes) if classes is not None else None
        )


@dataclass(frozen=True)
class FeatureBatch:
    """Rows of features as columns: ``columns[name][i]`` is row ``i``'s value (None: missing).

    Serving builds it from Predict rows or ModelInfer tensors; each runtime reads
    it in the form its framework wants (:meth:`rows` for River's dicts,
    :meth:`matrix` for a numeric array, :meth:`frame` for a DataFrame).
    """

    columns: Mapping[str, Column]
    n: int
    names: tuple[str, ...]
    """Column order: the model's inputs."""
    _rows: list[dict[str, Any]] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> FeatureBatch:
        """Columns of ``rows`` (a key absent from a row is a missing value)."""
        return cls({n: [r.get(n) for r in rows] for n in names}, len(rows), tuple(names))

    @classmethod
    def from_columns(
        cls, columns: Mapping[str, Column], n: int, names: Sequence[str]
    ) -> FeatureBatch:
        """``columns`` (any subset of ``names``; an absent column is missing in every row)."""
        for name, values in columns.items():
            if len(values) != n:
                raise InvalidArgumentError(f"column {name!r} has {len(values)} values, not {n}")
        return cls(columns, n, tuple(names))

    def column(self, name: str) -> Column:
        """The values of ``name`` (all None when the column was not given)."""
        values = self.columns.get(name)
        return values if values is not None else [None] * self.n

    def rows(self) -> list[dict[str, Any]]:
        """One dict per row, missing values left out (River's convention).

        Built once per batch and shared by every caller (serving logs the very dicts
        River scored, rather than building them twice): do not change them.
        """
        if self._rows is not None:
            return self._rows
        names = [n for n in self.names if n in self.columns]
        # Array columns (a decoded tensor) become Python scalars, as River and JSON want.
        cols = [c.tolist() if isinstance(c := self.columns[n], np.ndarray) else c for n in names]
        out: list[dict[str, Any]]
        if not any(_has_missing(values) for values in cols):
            # No value to leave out: one C-level dict(zip()) per row.
            out = (
                [dict(zip(names, values, strict=True)) for values in zip(*cols, strict=True)]
                if cols
                else [{} for _ in range(self.n)]
            )
        else:
            out = []
            for i in range(self.n):
                row = {}
                for name, values in zip(names, cols, strict=True):
                    v = values[i]
                    if v is not None:
                        row[name] = v
                out.append(row)
        object.__setattr__(self, "_rows", out)
        return out

    def matrix(self, dtype: Any = np.float64) -> np.ndarray:
        """An ``[n, len(names)]`` array in column order; missing values are NaN.

        Raises :class:`InvalidArgumentError` naming the column whose values are not numbers.
        """
        out = np.empty((self.n, len(self.names)), dtype=dtype)
        for j, name in enumerate(self.names):
            values = self.columns.get(name)
            if values is None:
                out[:, j] = math.nan
                continue
            try:
                if isinstance(values, np.ndarray) and values.dtype != object:
                    out[:, j] = values
                else:
                    out[:, j] = [math.nan if v is None else v for v in values]
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(
                    f"input {name!r} must be numeric for this model ({exc})"
                ) from None
        return out

    def frame(self) -> Any:
        """A pandas DataFrame with the columns in order (missing values are None/NaN)."""
        import pandas as pd

        return pd.DataFrame({n: list(self.column(n)) for n in self.names}, columns=list(self.names))


def _has_missing(values: Column) -> bool:
    """Whether a column holds a None (a numeric array cannot)."""
    if isinstance(values, np.ndarray):
        return values.dtype == object and any(v is None for v in values)
    return None in values


@dataclass(frozen=True)
class Predictions:
    """A batch's predictions: one label per row and, for classifiers, the probabilities.

    ``probabilities[i, j]`` is row ``i``'s probability of ``classes[j]`` (``str`` of
    the class, as the Open Inference Protocol and the prediction log carry it).
    """

    labels: Sequence[Any]
    probabilities: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    _scored: Sequence[Scored] | None = field(default=None, repr=False, compare=False)
    """The rows as the model scored them one by one (:meth:`from_scored`)."""
    _rows: list[list[float]] | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.labels)

    def scored(self, i: int) -> Scored:
        """Row ``i`` as ``(label, {class: probability})``.

        Rows scored one by one (:meth:`from_scored`) come back as the model gave them
        (a class it did not name for the row has probability 0), shared: do not
        change them.
        """
        if self._scored is not None:
            return self._scored[i]
        label = self.labels[i]
        if self.probabilities is None:
            return label, {}
        rows = self._rows
        if rows is None:
            # One conversion for the whole batch: per-row dicts are built row after row.
            rows = self.probabilities.tolist()
            object.__setattr__(self, "_rows", rows)
        return label, dict(zip(self.classes, rows[i], strict=True))

    def probability_columns(self) -> dict[str, Sequence[float | None]]:
        """Each class's probability for every row, by class (empty without probabilities).

        The column-wise view of :meth:`scored` (the prediction log writes it): one
        contiguous float64 array per class, built without a dict per row; for rows
        scored one by one, a class a row did not name is None there, where
        :meth:`scored` leaves it out.
        """
        if self.probabilities is None:
            return {}
        if self._scored is not None:
            return {c: [probs.get(c) for _, probs in self._scored] for c in self.classes}
        by_class = np.ascontiguousarray(self.probabilities.T, dtype=np.float64)
        return dict(zip(self.classes, by_class, strict=True))

    def all_scored(self) -> list[Scored]:
        """Every row as :meth:`scored` gives it."""
        return [self.scored(i) for i in range(len(self.labels))]

    @classmethod
    def from_scored(cls, scored: Sequence[Scored]) -> Predictions:
        """Predictions of rows scored one by one (classes: every class any row named)."""
        labels = [label for label, _ in scored]
        classes = sorted(set().union(*(probs for _, probs in scored)))
        if not classes:
            return cls(labels, _scored=scored)
        rows: list[Any] | None = None
        if len(classes) > 1:
            # Usually every row names every class: one C-level lookup of them all per row.
            get = operator.itemgetter(*classes)
            try:
                rows = [get(p) for _, p in scored]
            except KeyError:
                rows = None
        if rows is None:
            rows = [[p.get(c, 0.0) for c in classes] for _, p in scored]
        return cls(labels, np.array(rows, dtype=np.float64), tuple(classes), _scored=scored)


class ModelRuntime(abc.ABC):
    """A model version ready to predict, behind the interface every framework shares.

    Subclasses set :attr:`framework` (the name the registry records), :attr:`platform`
    (the Open Inference Protocol's platform string) and :attr:`formats` (the artifact
    formats they load, the first being what :meth:`dump` writes), and implement
    :meth:`from_artifact` and :meth:`predict`.  A runtime is immutable once built:
    serving swaps whole runtimes, so a request keeps the model it started with.
    """

    framework: ClassVar[str]
    platform: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]

    def __init__(self, model: Any, signature: ModelSignature) -> None:
        self.model = model
        self.signature = signature

    @classmethod
    @abc.abstractmethod
    def from_artifact(
        cls, data: bytes, signature: ModelSignature, spec: Mapping[str, Any]
    ) -> ModelRuntime:
        """The runtime of verified artifact bytes.

        ``signature`` is what the version's spec declares (inputs in order, task);
        ``spec`` the whole recorded spec, for runtime-specific settings.  Raises
        :class:`FailedPreconditionError` naming what is wrong when the artifact is not
        a model of this framework or does not match the signature.
        """

    @abc.abstractmethod
    def predict(self, batch: FeatureBatch) -> Predictions:
        """Predict every row of ``batch`` with one call into the model.

        Raises :class:`InvalidArgumentError` when the batch cannot be fed to the model
        (a non-numeric value for a numeric input …), naming the input.
        """

    def predict_one(self, row: Mapping[str, Any]) -> Scored:
        """One row (absent keys are missing values); a batch of one unless a framework
        has a cheaper single-row path."""
        return self.predict(FeatureBatch.from_rows([row], self.signature.names)).scored(0)

    def compile(self) -> str | None:
        """Prepare a faster single-row path when the framework has one, checked to give
        the model's own answers; None when the runtime has nothing to compile.

        Call it once, before the runtime is shared (serving does, in the thread that
        loads the version); it returns a sentence saying what it did or why it did
        not, for the log. A runtime that cannot compile its model keeps serving it
        as it was: compiling never fails a load.
        """
        return None

    @classmethod
    def dump(cls, model: Any) -> bytes:
        """The artifact bytes of a model object, in :attr:`formats` ``[0]``."""
        raise NotImplementedError(f"the {cls.framework} runtime does not serialise models")

    @property
    def names(self) -> tuple[str, ...]:
        """The input names, in column order."""
        return self.signature.names

    def inputs(self) -> list[TensorSpec]:
        """One ``[-1, 1]`` tensor per input feature, typed as the feature store declares."""
        return [TensorSpec(i.name, i.datatype, (-1, 1)) for i in self.signature.inputs]

    def outputs(self) -> list[TensorSpec]:
        """``predict`` (BYTES classes or FP64 values); classifiers add ``probability`` and
        ``probabilities`` (``[n, k]``, the class order in its ``classes`` parameter)."""
        if not self.signature.is_classifier:
            return [TensorSpec("predict", "FP64", (-1,))]
        return [
            TensorSpec("predict", "BYTES", (-1,)),
            TensorSpec("probability", "FP64", (-1,)),
            TensorSpec("probabilities", "FP64", (-1, -1)),
        ]

    def describe(self) -> str:
        """``framework model`` for messages."""
        return f"{self.framework} {type(self.model).__name__}"
