"""A model version ready to score: the River pipeline and what its inputs are.

A :class:`LoadedModel` is immutable once built; serving swaps whole objects, so
a request that picked a model keeps scoring with it even if a newer champion is
swapped in meanwhile.

>>> from river import linear_model
>>> m = LoadedModel.build(
...     "loans", 3, linear_model.LogisticRegression(),
...     spec={"featureset": "loans", "features": ["salary", "age"]},
...     feature_types={"salary": "FP64", "age": "INT64"},
... )
>>> [f.datatype for f in m.features], m.is_classifier
(['FP64', 'INT64'], True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from river import base as river_base

from driftline.contracts.errors import FailedPreconditionError

__all__ = [
    "DEFAULT_DATATYPE",
    "FeatureDatatype",
    "LoadedModel",
    "ModelFeature",
    "Scored",
    "feature_names_of_spec",
    "featureset_of_spec",
]

FeatureDatatype = Literal["FP64", "INT64", "BYTES", "BOOL"]
"""The Open Inference Protocol datatype a feature is exchanged as."""

DEFAULT_DATATYPE: FeatureDatatype = "FP64"
"""Used for a feature whose type the feature store does not declare."""

Label = bool | int | float | str

Scored = tuple[Label | None, dict[str, float]]
"""``(prediction, probabilities)``: probabilities by class name (empty for regression);
the prediction is ``None`` when the model has not learnt anything yet."""


@dataclass(frozen=True, slots=True)
class ModelFeature:
    """One input of a model: the feature's name and the datatype it is exchanged as."""

    name: str
    datatype: FeatureDatatype


def featureset_of_spec(spec: Mapping[str, Any]) -> str:
    """The feature set a model spec reads (``featureset: loans`` or ``featureset: {name: …}``)."""
    fs = spec.get("featureset", spec.get("feature_set", ""))
    if isinstance(fs, Mapping):
        fs = fs.get("name", "")
    return str(fs or "")


def feature_names_of_spec(spec: Mapping[str, Any]) -> list[str]:
    """The feature names a model spec lists, in order (empty when it lists none).

    Accepts ``features: [a, b]``, ``features: [{name: a}, …]`` or ``feature_names``.
    """
    raw = spec.get("features", spec.get("feature_names", []))
    names: list[str] = []
    if isinstance(raw, Mapping):
        raw = list(raw)
    if isinstance(raw, Iterable) and not isinstance(raw, str | bytes):
        for item in raw:
            name = item.get("name") if isinstance(item, Mapping) else item
            if isinstance(name, str) and name and name not in names:
                names.append(name)
    return names


def _task_of_spec(spec: Mapping[str, Any]) -> str:
    task = spec.get("task", "")
    return str(task).lower() if task else ""


@dataclass(frozen=True, eq=False, slots=True)
class LoadedModel:
    """A verified, deserialized model version with its input schema.

    Build it with :meth:`build`; ``features`` is the model's input, in the spec's order.
    """

    name: str
    version: int
    pipeline: Any
    featureset: str
    features: tuple[ModelFeature, ...]
    is_classifier: bool
    sha256: str = ""
    by_name: dict[str, ModelFeature] = field(default_factory=dict)
    feature_names: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        name: str,
        version: int,
        pipeline: Any,
        *,
        spec: Mapping[str, Any],
        feature_types: Mapping[str, FeatureDatatype],
        sha256: str = "",
        featureset: str = "",
    ) -> LoadedModel:
        """A model from its pipeline, its spec and the feature set's declared types.

        The features are the spec's list, or every feature of ``feature_types`` when
        the spec lists none. Raises :class:`FailedPreconditionError` when neither
        names a feature (the model's input would be unknown).
        """
        names = feature_names_of_spec(spec) or list(feature_types)
        if not names:
            raise FailedPreconditionError(
                f"model {name!r} v{version}: its spec lists no features and its feature set "
                "declares none, so serving cannot tell what the model's input is"
            )
        features = tuple(ModelFeature(n, feature_types.get(n, DEFAULT_DATATYPE)) for n in names)
        task = _task_of_spec(spec)
        if task in ("binary", "multiclass", "classification"):
            is_classifier = True
        elif task == "regression":
            is_classifier = False
        else:
            is_classifier = isinstance(pipeline, river_base.Classifier)
        return cls(
            name=name,
            version=version,
            pipeline=pipeline,
            featureset=featureset or featureset_of_spec(spec),
            features=features,
            is_classifier=is_classifier,
            sha256=sha256,
            by_name={f.name: f for f in features},
            feature_names=tuple(names),
        )

    def score(self, x: dict[str, Any]) -> Scored:
        """Score one row (absent keys are missing features).

        Classifiers: the most probable class (River's own tie-break: first in the
        probability dict) and every class's probability keyed by ``str(class)``.
        """
        if self.is_classifier:
            proba = self.pipeline.predict_proba_one(x)
            if not proba:
                return None, {}
            label = max(proba, key=proba.get)
            return label, {str(k): float(v) for k, v in proba.items()}
        value = self.pipeline.predict_one(x)
        return (None if value is None else float(value)), {}

    def score_many(self, rows: Sequence[dict[str, Any]]) -> list[Scored]:
        """Score rows in one pass (a loop of :meth:`score`; no pandas on the path)."""
        score = self.score
        return [score(x) for x in rows]

    def describe(self) -> str:
        """``name vN`` for messages."""
        return f"{self.name!r} v{self.version}"
