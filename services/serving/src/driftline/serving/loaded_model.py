"""A model version ready to score: its framework's runtime and what its inputs are.

A :class:`LoadedModel` wraps the :class:`~driftline.model_runtimes.ModelRuntime`
of the version's recorded framework (River, scikit-learn, ONNX, a user's Python
class …). It is immutable once built; serving swaps whole objects, so a request
that picked a model keeps scoring with it even if a newer champion is swapped in
meanwhile.

>>> from river import linear_model
>>> m = LoadedModel.build(
...     "loans", 3, linear_model.LogisticRegression(),
...     spec={"featureset": "loans", "features": ["salary", "age"]},
...     feature_types={"salary": "FP64", "age": "INT64"},
... )
>>> [f.datatype for f in m.features], m.is_classifier, m.framework
(['FP64', 'INT64'], True, 'river')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from river import base as river_base

from driftline.contracts.errors import FailedPreconditionError
from driftline.model_runtimes import (
    FeatureBatch,
    ModelRuntime,
    ModelSignature,
    Predictions,
    Task,
    runtime_for,
)

__all__ = [
    "DEFAULT_DATATYPE",
    "FeatureDatatype",
    "LoadedModel",
    "ModelFeature",
    "Scored",
    "classes_of_spec",
    "feature_names_of_spec",
    "featureset_of_spec",
    "settle_task",
    "signature_of_spec",
    "task_of_spec",
]

FeatureDatatype = Literal["FP64", "INT64", "BYTES", "BOOL"]
"""The Open Inference Protocol datatype a feature is exchanged as."""

DEFAULT_DATATYPE: FeatureDatatype = "FP64"
"""Used for a feature whose type the feature store does not declare."""

Label = bool | int | float | str

Scored = tuple[Label | None, dict[str, float]]
"""``(prediction, probabilities)``: probabilities by class name (empty for regression);
the prediction is ``None`` when the model has not learnt anything yet."""

_TASKS: dict[str, Task] = {
    "binary": "binary",
    "multiclass": "multiclass",
    # Older specs said only "classification"; binary or not changes nothing in serving.
    "classification": "multiclass",
    "regression": "regression",
}


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


def task_of_spec(spec: Mapping[str, Any]) -> Task | None:
    """The task a spec declares (``binary``, ``multiclass``, ``regression``); None when it
    declares none serving knows."""
    task = spec.get("task", "")
    return _TASKS.get(str(task).lower()) if task else None


def classes_of_spec(spec: Mapping[str, Any]) -> list[Any] | None:
    """The spec's ``classes`` list (None when it has none), whole floats as ints.

    A spec travels as a protobuf ``Struct``, where every number is a double: the
    classes ``[0, 1]`` a user wrote arrive as ``[0.0, 1.0]``, and would not match
    the integer labels the model predicts.
    """
    classes = spec.get("classes")
    if not isinstance(classes, list) or not classes:
        return None
    return [int(c) if isinstance(c, float) and c.is_integer() else c for c in classes]


def signature_of_spec(
    what: str,
    spec: Mapping[str, Any],
    feature_types: Mapping[str, FeatureDatatype],
    *,
    task: Task,
) -> ModelSignature:
    """A version's input signature: the spec's features (else every feature of the feature
    set), typed as the feature store declares them, with ``task`` and the spec's ``classes``.

    Raises :class:`FailedPreconditionError` naming ``what`` when neither the spec nor
    the feature set names a feature (the model's input would be unknown).
    """
    names = feature_names_of_spec(spec) or list(feature_types)
    if not names:
        raise FailedPreconditionError(
            f"model {what}: its spec lists no features and its feature set "
            "declares none, so serving cannot tell what the model's input is"
        )
    return ModelSignature.of(
        names, task=task, datatypes=feature_types, classes=classes_of_spec(spec)
    )


def settle_task(runtime: ModelRuntime) -> ModelRuntime:
    """A River runtime loaded without a declared task, as the classifier it may be.

    Specs without a ``task`` predate frameworks: serving told a River classifier
    by its class, as it still does. Such a version is loaded as a regressor (every
    River estimator has ``predict_one``) and rebuilt here as a classifier when it is
    one; other runtimes are returned as they are.
    """
    if runtime.framework == "river" and isinstance(runtime.model, river_base.Classifier):
        sig = runtime.signature
        classified = ModelSignature(sig.inputs, "binary", sig.classes)
        return type(runtime)(runtime.model, classified)
    return runtime


@dataclass(frozen=True, eq=False, slots=True)
class LoadedModel:
    """A verified, deserialized model version with its input schema.

    Build it with :meth:`of_runtime` (a loaded artifact) or :meth:`build` (a model
    object in memory); ``features`` is the model's input, in the signature's order.
    """

    name: str
    version: int
    runtime: ModelRuntime
    featureset: str
    features: tuple[ModelFeature, ...]
    is_classifier: bool
    score: Callable[[Mapping[str, Any]], Scored]
    """Score one row (absent keys are missing features): ``runtime.predict_one`` itself,
    bound once so that Predict pays nothing over the framework's own call (for River,
    ``predict_proba_one`` and its tie-break: the first most probable class wins)."""
    sha256: str = ""
    artifact_format: str = ""
    by_name: dict[str, ModelFeature] = field(default_factory=dict)
    feature_names: tuple[str, ...] = ()

    @classmethod
    def of_runtime(
        cls,
        name: str,
        version: int,
        runtime: ModelRuntime,
        *,
        featureset: str,
        sha256: str = "",
        artifact_format: str = "",
    ) -> LoadedModel:
        """A model served by ``runtime``; its features are the runtime's signature inputs."""
        features = tuple(ModelFeature(i.name, i.datatype) for i in runtime.signature.inputs)
        return cls(
            name=name,
            version=version,
            runtime=runtime,
            featureset=featureset,
            features=features,
            is_classifier=runtime.signature.is_classifier,
            score=runtime.predict_one,
            sha256=sha256,
            artifact_format=artifact_format,
            by_name={f.name: f for f in features},
            feature_names=tuple(f.name for f in features),
        )

    @classmethod
    def build(
        cls,
        name: str,
        version: int,
        model: Any,
        *,
        spec: Mapping[str, Any],
        feature_types: Mapping[str, FeatureDatatype],
        sha256: str = "",
        featureset: str = "",
        framework: str = "river",
    ) -> LoadedModel:
        """A model from a fitted model object in memory (tests, benchmarks, in-memory sources).

        The object is wrapped in the runtime of ``framework`` as the registry's
        artifact would be. The features are the spec's list, or every feature of
        ``feature_types`` when the spec lists none. Raises
        :class:`FailedPreconditionError` when neither names a feature.
        """
        what = f"{name!r} v{version}"
        task = task_of_spec(spec)
        if task is None and framework != "river":
            raise FailedPreconditionError(
                f"model {what}: a {framework} model's spec must declare its task "
                "(binary, multiclass or regression)"
            )
        signature = signature_of_spec(what, spec, feature_types, task=task or "regression")
        runtime = runtime_for(framework)(model, signature)
        if task is None:
            runtime = settle_task(runtime)
        return cls.of_runtime(
            name,
            version,
            runtime,
            featureset=featureset or featureset_of_spec(spec),
            sha256=sha256,
        )

    @property
    def framework(self) -> str:
        """The framework whose runtime serves this version (``river``, ``sklearn`` …)."""
        return self.runtime.framework

    @property
    def platform(self) -> str:
        """The runtime's Open Inference Protocol platform (``river``, ``onnxruntime_onnx`` …)."""
        return self.runtime.platform

    @property
    def model(self) -> Any:
        """The framework's own model object (a River pipeline, a fitted estimator …)."""
        return self.runtime.model

    def predict(self, batch: FeatureBatch) -> Predictions:
        """Every row of ``batch`` with one call into the model (see ``ModelRuntime.predict``)."""
        return self.runtime.predict(batch)

    def describe(self) -> str:
        """``name vN`` for messages."""
        return f"{self.name!r} v{self.version}"
