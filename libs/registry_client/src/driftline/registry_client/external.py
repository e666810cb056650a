"""Registering a model trained outside Driftline: a fitted estimator, or an artifact file.

A team that fitted a scikit-learn ``Pipeline``, a LightGBM or XGBoost scikit-learn
estimator, or exported an ONNX graph in a notebook registers it in one call::

    from driftline.registry_client import register_model_sync

    version = register_model_sync(
        "127.0.0.1:50052", "loans-gbm", fitted_pipeline,
        featureset="loans", task="binary",
        trained_on=TrainedOn(export="train.parquet", examples=48_000),
        promote="challenger",
    )

The spec is built from the object (its features from ``feature_names_in_`` when it
was fitted on a DataFrame), the artifact serialised by the framework's runtime,
the versions of the libraries that wrote it recorded, and the estimator checked
against the spec *before* anything is uploaded: a column the spec does not list,
a width that differs from the features, classes that do not fit the task.  The
registry then checks the version against its feature set (see
:mod:`driftline.registry.admission`); ``driftline models register`` does the same
from a spec YAML and a file.

Loading a pickle runs code, so it happens here, in the caller's process and on the
caller's own file — never in the registry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import io
import platform
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from driftline.contracts.errors import InvalidArgumentError
from driftline.contracts.messages import Lineage, OffsetRange
from driftline.registry_api.models import SKLEARN_INPUT_TAG, ModelVersionInfo
from driftline.registry_client.client import RegistryClient
from driftline.specs import (
    FeatureSetCatalog,
    FeatureSetSpec,
    ModelSpec,
    PromotionSpec,
    load_featuresets,
)

__all__ = [
    "PreparedVersion",
    "Registered",
    "TrainedOn",
    "default_format",
    "library_versions",
    "prepare_artifact",
    "prepare_object",
    "register_model",
    "register_model_sync",
    "register_prepared",
    "spec_for",
]

Promote = Literal["champion", "challenger"]
_T = TypeVar("_T")

_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    # import name -> distribution names to ask importlib.metadata, in order
    "sklearn": ("scikit-learn",),
    "lightgbm": ("lightgbm",),
    "xgboost": ("xgboost", "xgboost-cpu"),
    "numpy": ("numpy",),
    "pandas": ("pandas",),
    "joblib": ("joblib",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime",),
    "skl2onnx": ("skl2onnx",),
    "scipy": ("scipy",),
}
_LIBRARY_NAMES = {"sklearn": "scikit-learn"}


def _version(module: str) -> str | None:
    for dist in _DISTRIBUTIONS.get(module, (module,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def library_versions(*modules: str) -> dict[str, str]:
    """``{library: version}`` of the installed top-level ``modules`` (``sklearn`` is
    recorded as ``scikit-learn``), plus ``python``; modules not installed are left out.

    >>> sorted(library_versions("numpy"))
    ['numpy', 'python']
    """
    out = {"python": platform.python_version()}
    for module in modules:
        found = _version(module)
        if found is not None:
            out[_LIBRARY_NAMES.get(module, module)] = found
    return out


def _estimator_modules(estimator: Any) -> set[str]:
    """Top-level modules of an estimator and every estimator inside it (pipeline steps,
    column transformers, wrapped estimators)."""
    seen: set[int] = set()
    modules: set[str] = set()
    stack = [estimator]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        modules.add(type(obj).__module__.split(".")[0])
        get_params = getattr(obj, "get_params", None)
        if not callable(get_params):
            continue
        try:
            params = get_params(deep=False)
        except Exception:  # a third-party estimator whose get_params is broken
            continue
        for value in params.values():
            items = value if isinstance(value, list | tuple) else [value]
            for item in items:
                # Pipeline steps are (name, estimator) pairs; column transformers add columns.
                parts = item if isinstance(item, tuple) else (item,)
                stack.extend(p for p in parts if callable(getattr(p, "fit", None)))
    return modules


@dataclass(frozen=True)
class TrainedOn:
    """What a model trained elsewhere learned from: recorded as the version's lineage.

    ``export`` names where the training set came from (the file ``driftline features
    export`` wrote, a table …) and is kept as the version's ``trained_on`` tag;
    ``offsets`` and the event-time range say which part of the feature log it is.
    """

    export: str = ""
    offsets: Sequence[OffsetRange] = ()
    event_time_from: datetime | None = None
    event_time_to: datetime | None = None
    examples: int = 0

    def lineage(self, featureset: str, featureset_version: int) -> Lineage:
        """The lineage recorded with the version."""
        return Lineage(
            featureset=featureset,
            featureset_version=featureset_version,
            offsets=list(self.offsets),
            event_time_from=self.event_time_from,
            event_time_to=self.event_time_to,
            examples=self.examples,
        )


@dataclass(frozen=True)
class PreparedVersion:
    """A version ready to upload: checked against its spec on this side."""

    spec: ModelSpec
    data: bytes
    artifact_format: str
    library_versions: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)
    featureset_version: int = 0
    """The feature set's version the model was checked against here (0: not known here),
    recorded in the lineage unless the caller names one."""

    @property
    def framework(self) -> str:
        """The spec's framework."""
        return self.spec.framework


@dataclass(frozen=True)
class Registered:
    """A registered version, and the alias change when it was promoted."""

    version: ModelVersionInfo
    alias: str | None = None
    previous_version: int | None = None


def default_format(framework: str, path: Path | None = None) -> str:
    """The artifact format a file of ``framework`` most likely is: ``sklearn-joblib`` for a
    ``.joblib`` file, else the runtime's first format.

    >>> default_format("sklearn", Path("model.joblib")), default_format("onnx")
    ('sklearn-joblib', 'onnx')
    """
    from driftline.model_runtimes import runtime_for

    if framework == "sklearn" and path is not None and path.suffix.lower() == ".joblib":
        return "sklearn-joblib"
    return runtime_for(framework).formats[0]


def spec_for(
    name: str,
    *,
    featureset: str,
    task: Literal["binary", "multiclass", "regression"],
    framework: str,
    features: Sequence[str] | None = None,
    classes: Sequence[str | int | bool] | None = None,
    python_class: str | None = None,
    description: str = "",
) -> ModelSpec:
    """The model spec of a model trained elsewhere (no pipeline: Driftline serves and
    watches it, and cannot retrain it).  :class:`InvalidArgumentError` says what is wrong."""
    # The monitor reports the prequential metric; a regression model cannot use the default.
    metric = "MAE" if task == "regression" else "Accuracy"
    try:
        return ModelSpec(
            name=name,
            featureset=featureset,
            task=task,
            framework=framework,
            metric=metric,
            promotion=PromotionSpec(metric=metric),
            features=list(features) if features is not None else None,
            classes=list(classes) if classes is not None else None,
            python_class=python_class,
            description=description,
        )
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            cause = (e.get("ctx") or {}).get("error")
            loc = [*e["loc"], *getattr(cause, "path", ())]
            message = getattr(cause, "message", e["msg"].removeprefix("Value error, "))
            problems.append(f"{'.'.join(str(p) for p in loc) or 'spec'}: {message}")
        problems_text = "; ".join(problems)
        raise InvalidArgumentError(f"model {name!r}: {problems_text}") from None


def _featureset(
    spec: ModelSpec, featuresets: FeatureSetCatalog | Path | None
) -> FeatureSetSpec | None:
    if featuresets is None:
        return None
    if isinstance(featuresets, Path):
        if not featuresets.is_dir():
            return None
        featuresets = load_featuresets(featuresets)
    return featuresets.get(spec.featureset)


def _string_features(features: Sequence[str], featureset: FeatureSetSpec | None) -> list[str]:
    if featureset is None:
        return []
    strings = {n for n, f in featureset.fields.items() if f.type == "string"}
    strings |= {
        a.name
        for a in featureset.aggregations
        if a.fn == "last" and a.field is not None and featureset.fields[a.field].type == "string"
    }
    return [f for f in features if f in strings]


def _check_sklearn(
    estimator: Any, spec: ModelSpec, featureset: FeatureSetSpec | None
) -> tuple[ModelSpec, dict[str, str]]:
    """The spec with its features settled, and the tags to record; or why the estimator
    does not fit the spec."""
    what = type(estimator).__name__
    if not callable(getattr(estimator, "predict", None)):
        raise InvalidArgumentError(f"the artifact holds a {what}, which has no predict()")
    fitted = getattr(estimator, "feature_names_in_", None)
    frame = fitted is not None
    features: list[str]
    if fitted is not None:
        # Fitted on a DataFrame: it picks its columns by name, so those are its features.
        names = [str(n) for n in fitted]
        features = list(spec.features) if spec.features is not None else names
        missing = [n for n in names if n not in features]
        if missing:
            raise InvalidArgumentError(
                f"the {what} was fitted on column {', '.join(map(repr, missing))}, which the "
                f"spec's features ({', '.join(features)}) do not include"
            )
    else:
        width = getattr(estimator, "n_features_in_", None)
        listed = spec.feature_names(featureset)
        if listed is None:
            raise InvalidArgumentError(
                f"the {what} was fitted on an array and the spec lists no features: list the "
                "training matrix's columns, in order, as the spec's features"
            )
        features = listed
        if width is not None and int(width) != len(features):
            raise InvalidArgumentError(
                f"the {what} was fitted on {int(width)} columns but the spec lists "
                f"{len(features)} features ({', '.join(features)}); list the training "
                "matrix's columns, in order"
            )
        strings = _string_features(features, featureset)
        if strings:
            raise InvalidArgumentError(
                f"feature {strings[0]!r} is a string in feature set {spec.featureset}, but the "
                f"{what} was fitted on an array of numbers; fit it on a pandas DataFrame"
            )
    classes = getattr(estimator, "classes_", None)
    if spec.task == "regression":
        if classes is not None:
            raise InvalidArgumentError(
                f"the {what} is a classifier (classes {list(classes)}) but the spec's task is "
                "regression"
            )
    else:
        if classes is None:
            raise InvalidArgumentError(
                f"the spec's task is {spec.task} but the {what} has no classes_: is it a "
                "fitted classifier?"
            )
        found = [c.item() if hasattr(c, "item") else c for c in classes]
        if spec.task == "binary" and len(found) != 2:
            raise InvalidArgumentError(
                f"the spec's task is binary but the {what} has {len(found)} classes: {found}"
            )
        if spec.classes is not None and [str(c) for c in spec.classes] != [str(c) for c in found]:
            raise InvalidArgumentError(
                f"the spec lists classes {spec.classes} but the {what} predicts {found}, in "
                "that order"
            )
    settled = spec.model_copy(update={"features": list(features)})
    return settled, {SKLEARN_INPUT_TAG: "dataframe" if frame else "array"}


def _onnx_facts(data: bytes, spec: ModelSpec) -> tuple[ModelSpec, dict[str, str]]:
    """Parse the ONNX bytes, load them into onnxruntime (ONNX runs no code at load), and
    settle the spec's features: one per graph input when the inputs are named after
    features and the spec lists none."""
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:
        raise InvalidArgumentError(f"the artifact is not an ONNX model: {exc}") from None
    versions = library_versions("onnx", "onnxruntime")
    if model.producer_name:
        versions[model.producer_name] = model.producer_version or "?"
    try:
        import onnxruntime as ort

        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except ImportError:
        pass  # the registry checks the graph; serving loads it
    except Exception as exc:
        raise InvalidArgumentError(
            f"onnxruntime cannot load the ONNX model: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    initialized = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initialized]
    if spec.features is None and len(inputs) > 1:
        spec = spec.model_copy(update={"features": inputs})
    return spec, versions


def _with_featureset(
    prepared: PreparedVersion, featuresets: FeatureSetCatalog | Path | None
) -> PreparedVersion:
    fs = _featureset(prepared.spec, featuresets)
    return dataclasses.replace(prepared, featureset_version=fs.version) if fs else prepared


def prepare_object(
    spec: ModelSpec,
    model: Any,
    *,
    featuresets: FeatureSetCatalog | Path | None = None,
) -> PreparedVersion:
    """Check a fitted model object against ``spec`` and serialise it with its runtime:
    a scikit-learn-API estimator (``sklearn``), an ``onnx.ModelProto`` (``onnx``), or
    the artifact bytes of any framework."""
    return _with_featureset(_prepare_object(spec, model, featuresets), featuresets)


def _prepare_object(
    spec: ModelSpec, model: Any, featuresets: FeatureSetCatalog | Path | None
) -> PreparedVersion:
    if isinstance(model, bytes | bytearray):
        return prepare_artifact(spec, bytes(model), featuresets=featuresets)
    from driftline.model_runtimes import runtime_for

    featureset = _featureset(spec, featuresets)
    if spec.framework == "sklearn":
        settled, tags = _check_sklearn(model, spec, featureset)
        # LightGBM's and XGBoost's estimators are served through scikit-learn's API too.
        modules = _estimator_modules(model) | {"numpy", "sklearn"}
        data = runtime_for("sklearn").dump(model)
        libs = library_versions(*sorted(modules & set(_DISTRIBUTIONS)))
        return PreparedVersion(settled, data, "sklearn-pickle", libs, tags)
    if spec.framework == "onnx":
        data = runtime_for("onnx").dump(model)
        settled, libs = _onnx_facts(data, spec)
        return PreparedVersion(settled, data, "onnx", libs)
    raise InvalidArgumentError(
        f"a {spec.framework} model is registered from its artifact bytes; pass bytes"
    )


def prepare_artifact(
    spec: ModelSpec,
    data: bytes,
    *,
    artifact_format: str | None = None,
    featuresets: FeatureSetCatalog | Path | None = None,
) -> PreparedVersion:
    """Check an artifact file's bytes against ``spec`` before upload.

    A scikit-learn artifact is loaded here (it is the caller's own file) to compare its
    ``feature_names_in_`` / ``n_features_in_`` / ``classes_`` with the spec; an ONNX one
    is parsed and loaded into onnxruntime; a ``python`` one is opaque bytes.
    """
    return _with_featureset(
        _prepare_artifact(spec, data, artifact_format, featuresets), featuresets
    )


def _prepare_artifact(
    spec: ModelSpec,
    data: bytes,
    artifact_format: str | None,
    featuresets: FeatureSetCatalog | Path | None,
) -> PreparedVersion:
    from driftline.model_runtimes import runtime_for

    fmt = artifact_format or default_format(spec.framework)
    formats = runtime_for(spec.framework).formats
    if fmt not in formats:
        raise InvalidArgumentError(
            f"artifact format {fmt!r} is not one the {spec.framework} runtime reads; it reads "
            f"{', '.join(formats)}"
        )
    if spec.framework == "sklearn":
        import joblib

        try:
            estimator = joblib.load(io.BytesIO(data))  # reads plain pickles too
        except Exception as exc:
            raise InvalidArgumentError(
                f"the artifact does not load as a scikit-learn estimator: {type(exc).__name__}: "
                f"{str(exc)[:300]}"
            ) from None
        settled, tags = _check_sklearn(estimator, spec, _featureset(spec, featuresets))
        modules = _estimator_modules(estimator) | {"numpy", "joblib", "sklearn"}
        libs = library_versions(*sorted(modules & set(_DISTRIBUTIONS)))
        return PreparedVersion(settled, data, fmt, libs, tags)
    if spec.framework == "onnx":
        settled, libs = _onnx_facts(data, spec)
        return PreparedVersion(settled, data, fmt, libs)
    return PreparedVersion(spec, data, fmt, library_versions())


async def register_prepared(
    client: RegistryClient,
    prepared: PreparedVersion,
    *,
    name: str | None = None,
    promote: Promote | None = None,
    trained_on: TrainedOn | Lineage | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    actor: str = "",
    featureset_version: int = 0,
) -> Registered:
    """Upload a prepared version (and point ``promote`` at it); the registry's refusal
    arrives as :class:`InvalidArgumentError` naming what is wrong, nothing registered."""
    name = name or prepared.spec.name
    all_tags = {**prepared.tags, **(tags or {})}
    if isinstance(trained_on, TrainedOn):
        if trained_on.export:
            all_tags["trained_on"] = trained_on.export
        lineage: Lineage | None = trained_on.lineage(
            prepared.spec.featureset, featureset_version or prepared.featureset_version
        )
    else:
        lineage = trained_on
    info = await client.register(
        name,
        prepared.data,
        metrics=metrics,
        lineage=lineage,
        spec=prepared.spec.model_dump(mode="json"),
        actor=actor,
        tags=all_tags,
        artifact_format=prepared.artifact_format,
        framework=prepared.framework,
        library_versions=prepared.library_versions,
    )
    if promote is None:
        return Registered(info)
    change, now = await client.set_alias(
        name,
        promote,
        info.version,
        actor=actor,
        reason=f"registered from outside ({prepared.framework}) and promoted to {promote}",
    )
    return Registered(now or info, promote, change.previous_version)


async def register_model(
    registry: RegistryClient | str,
    name: str,
    model: Any,
    *,
    featureset: str,
    task: Literal["binary", "multiclass", "regression"],
    features: Sequence[str] | None = None,
    framework: str | None = None,
    classes: Sequence[str | int | bool] | None = None,
    python_class: str | None = None,
    artifact_format: str | None = None,
    promote: Promote | None = None,
    trained_on: TrainedOn | Lineage | str | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str = "",
    actor: str = "",
    token: str | None = None,
    featuresets: FeatureSetCatalog | Path | None = None,
) -> Registered:
    """Register a model trained outside Driftline; the version (and alias change).

    ``model`` is a fitted scikit-learn estimator or ``Pipeline`` (LightGBM's and
    XGBoost's scikit-learn estimators too), an ``onnx.ModelProto``, or artifact bytes
    (then name the ``framework``; ``python`` also needs ``python_class``).  The spec
    is built from it: features from ``features``, else the estimator's
    ``feature_names_in_``, else the ONNX graph's per-feature inputs, else the feature
    set's.  ``trained_on`` (a :class:`TrainedOn`, a lineage, or the export's name)
    is recorded as lineage; ``promote`` points that alias at the new version.
    ``featuresets`` (a catalog or directory) lets the estimator be checked against the
    feature set's types here too; the registry checks them in any case.

    ``registry`` is a :class:`RegistryClient` or a ``host:port`` target (with
    ``token``).  Raises :class:`InvalidArgumentError` naming what does not fit.
    """
    if framework is None:
        if isinstance(model, bytes | bytearray):
            raise InvalidArgumentError(
                "artifact bytes do not say their framework: pass framework='sklearn', "
                "'onnx' or 'python'"
            )
        framework = "onnx" if type(model).__module__.startswith("onnx") else "sklearn"
    spec = spec_for(
        name,
        featureset=featureset,
        task=task,
        framework=framework,
        features=features,
        classes=classes,
        python_class=python_class,
        description=description,
    )
    if isinstance(model, bytes | bytearray):
        prepared = prepare_artifact(
            spec, bytes(model), artifact_format=artifact_format, featuresets=featuresets
        )
    else:
        prepared = prepare_object(spec, model, featuresets=featuresets)
    if isinstance(trained_on, str):
        trained_on = TrainedOn(export=trained_on)
    fs = _featureset(spec, featuresets)
    kwargs: dict[str, Any] = {
        "promote": promote,
        "trained_on": trained_on,
        "metrics": metrics,
        "tags": tags,
        "actor": actor,
        "featureset_version": fs.version if fs is not None else 0,
    }
    if isinstance(registry, RegistryClient):
        return await register_prepared(registry, prepared, **kwargs)
    async with RegistryClient(registry, token=token) as client:
        return await register_prepared(client, prepared, **kwargs)


def register_model_sync(registry: str, name: str, model: Any, **kwargs: Any) -> Registered:
    """:func:`register_model` for scripts and notebooks (``registry`` is ``host:port``).

    Runs on its own event loop, in a thread when the caller already runs one (Jupyter).
    """

    async def main() -> Registered:
        return await register_model(registry, name, model, **kwargs)

    return _run_blocking(main)


def _run_blocking(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    values: list[_T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            values.append(asyncio.run(factory()))
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="driftline-register")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return values[0]
