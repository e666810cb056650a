"""Model specs: what to learn, from which feature set, with which River pipeline.

A model spec is YAML, validated at load::

    name: loans-default
    featureset: loans
    label: default
    task: binary
    features: [salary, age, loan]          # optional; default: all of the feature set's
    pipeline:
      - preprocessing.StandardScaler       # a step without parameters
      - tree.HoeffdingAdaptiveTreeClassifier:
          grace_period: 100
          drift_detector: {drift.ADWIN: {delta: 0.002}}   # a nested estimator
          seed: 42
    metric: Accuracy
    retraining: {window: 20000, min_examples: 1000, holdout: 0.2}
    promotion: {metric: Accuracy, min_improvement: 0.005, min_eval_examples: 500}

The pipeline is assembled from :data:`ALLOWED_COMPONENTS` only: a step is either
a ``module.Class`` string or a one-key mapping ``{module.Class: {param: value}}``.
Parameter names are checked against the class's signature; a parameter value
that is a one-key mapping whose key looks like ``module.Class`` is a nested
component (allow-listed as well).  Nothing is ``eval``-ed and no name outside the
allow-list is ever imported.  A class's variadic parameter (``compose.Select``'s
``keys``) is written as a list.

A model of another framework names it; its ``pipeline`` is then the *batch
trainer* training refits on the window replayed from the feature log, built from
:data:`ALLOWED_TRAINER_COMPONENTS` (scikit-learn, LightGBM and XGBoost estimators
and common preprocessing, by their full import path)::

    name: loans-gbm
    featureset: loans
    task: binary
    framework: sklearn
    pipeline:
      - sklearn.ensemble.HistGradientBoostingClassifier: {max_iter: 100}

A model trained elsewhere and registered with ``driftline models register`` has a
spec too: ``framework: onnx`` (with ``classes`` naming its probability columns)
or ``framework: python`` (with ``python_class``, the import path of the user's
class) and no pipeline; Driftline serves and watches it but cannot retrain it.

A bad file fails at load with ``file:line: where: what is wrong``.  River and
scikit-learn are imported only when a spec is validated or built, so feature-set
users of this library do not pay for them.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from driftline.settings import locate
from driftline.specs.durations import parse_duration
from driftline.specs.featureset import FeatureSetSpec, SpecError, read_spec_mapping

Task = Literal["binary", "multiclass", "regression"]

ALLOWED_COMPONENTS: frozenset[str] = frozenset(
    {
        "compose.Select",
        "compose.Discard",
        "compose.TransformerUnion",
        "preprocessing.StandardScaler",
        "preprocessing.AdaptiveStandardScaler",
        "preprocessing.MinMaxScaler",
        "preprocessing.MaxAbsScaler",
        "preprocessing.OneHotEncoder",
        "preprocessing.OrdinalEncoder",
        "preprocessing.StatImputer",
        "tree.HoeffdingTreeClassifier",
        "tree.HoeffdingAdaptiveTreeClassifier",
        "tree.ExtremelyFastDecisionTreeClassifier",
        "tree.HoeffdingTreeRegressor",
        "tree.HoeffdingAdaptiveTreeRegressor",
        "tree.splitter.GaussianSplitter",
        "tree.splitter.HistogramSplitter",
        "tree.splitter.QOSplitter",
        "forest.ARFClassifier",
        "forest.ARFRegressor",
        "linear_model.LogisticRegression",
        "linear_model.LinearRegression",
        "linear_model.SoftmaxRegression",
        "naive_bayes.GaussianNB",
        "drift.ADWIN",
        "drift.PageHinkley",
        "drift.KSWIN",
        "drift.binary.DDM",
        "optim.SGD",
        "optim.Adam",
        "optim.RMSProp",
    }
)
"""The River classes a pipeline may use, as ``module.Class`` under ``river``."""

ALLOWED_METRICS: frozenset[str] = frozenset(
    {
        "Accuracy",
        "BalancedAccuracy",
        "F1",
        "MacroF1",
        "MicroF1",
        "Precision",
        "Recall",
        "LogLoss",
        "CrossEntropy",
        "ROCAUC",
        "MAE",
        "MSE",
        "RMSE",
        "R2",
    }
)
"""The River metrics (``river.metrics.<Name>``) a spec may name."""

ALLOWED_TRAINER_COMPONENTS: frozenset[str] = frozenset(
    {
        "sklearn.preprocessing.StandardScaler",
        "sklearn.preprocessing.MinMaxScaler",
        "sklearn.preprocessing.MaxAbsScaler",
        "sklearn.preprocessing.RobustScaler",
        "sklearn.preprocessing.OneHotEncoder",
        "sklearn.preprocessing.OrdinalEncoder",
        "sklearn.preprocessing.KBinsDiscretizer",
        "sklearn.preprocessing.PolynomialFeatures",
        "sklearn.impute.SimpleImputer",
        "sklearn.linear_model.LogisticRegression",
        "sklearn.linear_model.SGDClassifier",
        "sklearn.linear_model.LinearRegression",
        "sklearn.linear_model.Ridge",
        "sklearn.linear_model.Lasso",
        "sklearn.linear_model.ElasticNet",
        "sklearn.linear_model.SGDRegressor",
        "sklearn.naive_bayes.GaussianNB",
        "sklearn.tree.DecisionTreeClassifier",
        "sklearn.tree.DecisionTreeRegressor",
        "sklearn.ensemble.HistGradientBoostingClassifier",
        "sklearn.ensemble.HistGradientBoostingRegressor",
        "sklearn.ensemble.GradientBoostingClassifier",
        "sklearn.ensemble.GradientBoostingRegressor",
        "sklearn.ensemble.RandomForestClassifier",
        "sklearn.ensemble.RandomForestRegressor",
        "sklearn.ensemble.ExtraTreesClassifier",
        "sklearn.ensemble.ExtraTreesRegressor",
        "lightgbm.LGBMClassifier",
        "lightgbm.LGBMRegressor",
        "xgboost.XGBClassifier",
        "xgboost.XGBRegressor",
    }
)
"""The batch-trainer classes a non-River pipeline may use, by full import path."""

RETRAINABLE_FRAMEWORKS: frozenset[str] = frozenset({"river", "sklearn"})
"""Frameworks whose models training can (re)fit from a spec's pipeline."""

_COMPONENT_NAME = re.compile(r"^[a-z_]+(\.[a-z_]+)*\.[A-Z][A-Za-z0-9]*$")
_MODEL_NAME = r"^[a-z][a-z0-9_.-]*$"


class _PathError(ValueError):
    """A problem at a path inside the spec (used to find its line)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _check_steps(
    steps: list[Any],
    task: str,
    *,
    transformer: Callable[[Any], bool],
    regressor: Callable[[Any], bool],
    classifier: Callable[[Any], bool],
) -> tuple[str, int]:
    """Check a pipeline's steps the same way for every framework (the predicates say
    what a transformer, a regressor and a classifier are in it): every step but the
    last transforms, and the last one fits ``task``.  Returns the last step's path."""
    for i, step in enumerate(steps[:-1]):
        if not transformer(step):
            raise _PathError(
                ("pipeline", i),
                f"{type(step).__name__} is not a transformer; only the last step may be "
                "an estimator",
            )
    last = steps[-1]
    where = ("pipeline", len(steps) - 1)
    if task == "regression" and not regressor(last):
        raise _PathError(where, f"the last step must be a regressor for task regression, "
                         f"not {type(last).__name__}")  # fmt: skip
    if task != "regression" and not classifier(last):
        raise _PathError(where, f"the last step must be a classifier for task {task}, "
                         f"not {type(last).__name__}")  # fmt: skip
    return where


def _river_attr(dotted: str) -> Any:
    """The allow-listed River object ``river.<dotted>``; never anything else."""
    if dotted not in ALLOWED_COMPONENTS and dotted not in {f"metrics.{m}" for m in ALLOWED_METRICS}:
        raise ValueError(f"{dotted} is not allow-listed")
    module_path, _, attr = dotted.rpartition(".")
    module = importlib.import_module(f"river.{module_path}")
    return getattr(module, attr)


def _trainer_attr(dotted: str) -> Any:
    """The allow-listed batch-trainer class at ``dotted``; never anything else."""
    if dotted not in ALLOWED_TRAINER_COMPONENTS:
        raise ValueError(f"{dotted} is not allow-listed")
    module_path, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module_path), attr)


@dataclass(frozen=True)
class _Kind:
    """Where a pipeline's components come from: an allow-list and how to import one."""

    allowed: frozenset[str]
    resolve: Any
    what: str


_RIVER = _Kind(ALLOWED_COMPONENTS, _river_attr, "River class")
_TRAINER = _Kind(ALLOWED_TRAINER_COMPONENTS, _trainer_attr, "batch-trainer class")


@dataclass(frozen=True)
class _Component:
    name: str
    params: dict[str, Any]
    path: tuple[str | int, ...]


def _parse_component(raw: Any, path: tuple[str | int, ...], kind: _Kind = _RIVER) -> _Component:
    if isinstance(raw, str):
        name, params = raw, {}
        key_path = path
    elif isinstance(raw, Mapping) and len(raw) == 1:
        name, params_raw = next(iter(raw.items()))
        key_path = (*path, str(name))
        if params_raw is None:
            params_raw = {}
        if not isinstance(params_raw, Mapping):
            raise _PathError(
                key_path, f"the parameters of {name} must be a mapping, not {params_raw!r}"
            )
        params = dict(params_raw)
    else:
        raise _PathError(
            path,
            "a component is 'module.Class' or a one-key mapping {module.Class: {param: value}}",
        )
    if not isinstance(name, str) or name not in kind.allowed:
        raise _PathError(
            key_path,
            f"{name!r} is not an allowed {kind.what}; allowed: {', '.join(sorted(kind.allowed))}",
        )
    return _Component(name, params, key_path)


def _looks_like_component(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) == 1
        and isinstance(next(iter(value)), str)
        and bool(_COMPONENT_NAME.match(next(iter(value))))
    )


def _instantiate(comp: _Component, kind: _Kind = _RIVER) -> Any:
    """Build one component, checking every parameter name against the class signature."""
    cls = kind.resolve(comp.name)
    sig = inspect.signature(cls)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    accepted = {
        n: p
        for n, p in sig.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.VAR_POSITIONAL)
    }
    for pname, pvalue in comp.params.items():
        ppath = (*comp.path, str(pname))
        param = accepted.get(str(pname))
        if param is None:
            raise _PathError(
                ppath,
                f"{comp.name} has no parameter {pname!r}; "
                f"its parameters: {', '.join(accepted) or 'none'}",
            )
        value = _value(pvalue, ppath, kind)
        if param.kind is param.VAR_POSITIONAL:
            if not isinstance(value, list):
                raise _PathError(ppath, f"{comp.name}'s {pname} is a list")
            args.extend(value)
        else:
            kwargs[str(pname)] = value
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise _PathError(comp.path, f"{comp.name} rejected its parameters: {exc}") from exc


def _value(raw: Any, path: tuple[str | int, ...], kind: _Kind = _RIVER) -> Any:
    if _looks_like_component(raw):
        return _instantiate(_parse_component(raw, path, kind), kind)
    if isinstance(raw, list):
        return [_value(v, (*path, i), kind) for i, v in enumerate(raw)]
    if isinstance(raw, Mapping):
        return {k: _value(v, (*path, str(k)), kind) for k, v in raw.items()}
    return raw


def _metric_kind(metric: Any) -> str:
    from river import metrics

    if isinstance(metric, metrics.base.RegressionMetric):
        return "regression"
    if isinstance(metric, metrics.base.BinaryMetric):
        return "binary"
    return "classification"


def _check_metric(name: str, task: Task, path: tuple[str | int, ...]) -> None:
    if name not in ALLOWED_METRICS:
        raise _PathError(
            path,
            f"{name!r} is not an allowed metric; allowed: {', '.join(sorted(ALLOWED_METRICS))}",
        )
    kind = _metric_kind(_river_attr(f"metrics.{name}")())
    if task == "regression" and kind != "regression":
        raise _PathError(path, f"{name} is a classification metric; task is regression")
    if task != "regression" and kind == "regression":
        raise _PathError(path, f"{name} is a regression metric; task is {task}")
    if task == "multiclass" and kind == "binary":
        raise _PathError(path, f"{name} is a binary metric; task is multiclass")


def metric_key(name: str) -> str:
    """The key a metric is recorded under in a version's metrics: ``Accuracy`` → ``accuracy``."""
    return name.lower()


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrainingPolicy(_Spec):
    """Which recent data a retrained candidate learns from."""

    window: int | str = 20_000
    """A number of labeled examples (``20000``) or an event-time duration (``6h``)."""
    min_examples: int = Field(default=1000, ge=1)
    """Fewest labeled examples a candidate must learn from before it may be registered."""
    holdout: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Fraction of the replayed window, the most recent examples, kept for evaluation."""

    @field_validator("window")
    @classmethod
    def _window(cls, value: int | str) -> int | str:
        if isinstance(value, bool):
            raise ValueError("window is a number of examples or a duration like 6h")
        if isinstance(value, int):
            if value < 1:
                raise ValueError("a window of examples must be at least 1")
            return value
        parse_duration(value)
        return value

    @property
    def window_examples(self) -> int | None:
        """The window as a number of examples, or None when it is a duration."""
        return self.window if isinstance(self.window, int) else None

    @property
    def window_seconds(self) -> float | None:
        """The window as event-time seconds, or None when it is a number of examples."""
        return parse_duration(self.window) if isinstance(self.window, str) else None


class PromotionSpec(_Spec):
    """When a candidate replaces the champion, as a spec declares it (training turns it
    into the ``PromotionPolicy`` the registry client's ``decide_promotion`` applies)."""

    metric: str = "Accuracy"
    """The River metric candidate and champion are compared on."""
    min_improvement: float = Field(default=0.0, ge=0.0)
    """How much better (in the metric's own direction) the candidate must be."""
    min_eval_examples: int = Field(default=200, ge=1)
    """Fewest held-out examples a comparison needs; fewer means no promotion."""


class ModelSpec(_Spec):
    """A model: its feature set, label, task, framework, pipeline, metric and policies."""

    name: str = Field(pattern=_MODEL_NAME)
    featureset: str
    label: str = "label"
    """What the label means (documentation; labels arrive on ``driftline.labels.valid``)."""
    task: Task
    description: str = ""
    features: list[str] | None = None
    """The feature-set features the model reads; None means all of them."""
    framework: str = Field(default="river", pattern=r"^[a-z][a-z0-9_-]*$")
    """The runtime that serves it: ``river`` (learns online), ``sklearn`` (refitted in
    batches from ``pipeline``, or trained elsewhere), ``onnx``, ``python``, a plug-in's."""
    pipeline: list[str | dict[str, Any]] | None = None
    """Steps, as written in YAML (transformers, then one estimator last): River components
    for ``river`` (required), the batch trainer for ``sklearn`` (optional: without it the
    model is served and watched but not retrained)."""
    python_class: str | None = None
    """``framework: python``: the import path of the user's model class."""
    classes: list[str | int | bool] | None = None
    """A classifier's classes in the order of its probability outputs, where the artifact
    does not say it (ONNX)."""
    metric: str = "Accuracy"
    """The prequential metric reported on ``/metrics`` and recorded with versions."""
    retraining: RetrainingPolicy = RetrainingPolicy()
    promotion: PromotionSpec = PromotionSpec()

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_metric(self.metric, self.task, ("metric",))
        _check_metric(self.promotion.metric, self.task, ("promotion", "metric"))
        if self.features is not None:
            if not self.features:
                raise _PathError(("features",), "list at least one feature, or omit the key")
            if len(set(self.features)) != len(self.features):
                raise _PathError(("features",), "a feature is listed twice")
        if self.framework == "python" and not self.python_class:
            raise _PathError(("python_class",), "framework python needs python_class: the "
                             "import path of the model class (package.module.Class)")  # fmt: skip
        if self.python_class and self.framework != "python":
            raise _PathError(("python_class",), f"python_class is for framework python, not "
                             f"{self.framework}")  # fmt: skip
        if self.pipeline is not None and not self.pipeline:
            raise _PathError(("pipeline",), "list at least one step, or omit the key")
        if self.framework == "river" and self.pipeline is None:
            raise _PathError(("pipeline",), "a river model needs its pipeline of River components")
        if self.pipeline is not None and self.framework not in RETRAINABLE_FRAMEWORKS:
            raise _PathError(
                ("pipeline",),
                f"framework {self.framework} has no trainer: register versions trained elsewhere "
                "and leave out the pipeline (or use framework sklearn)",
            )
        if self.pipeline is not None:
            self.build_pipeline()  # every class and parameter checked here, at load
        return self

    @property
    def retrainable(self) -> bool:
        """Whether training can fit this model from its spec (a River or sklearn pipeline)."""
        return self.pipeline is not None and self.framework in RETRAINABLE_FRAMEWORKS

    @property
    def online(self) -> bool:
        """Whether it learns example by example (River) rather than by refitting a window."""
        return self.framework == "river"

    def _build_trainer(self) -> Any:
        from sklearn.base import is_classifier, is_regressor
        from sklearn.pipeline import make_pipeline

        assert self.pipeline is not None
        steps = [
            _instantiate(_parse_component(raw, ("pipeline", i), _TRAINER), _TRAINER)
            for i, raw in enumerate(self.pipeline)
        ]
        _check_steps(
            steps,
            self.task,
            transformer=lambda step: callable(getattr(step, "transform", None)),
            regressor=is_regressor,
            classifier=is_classifier,
        )
        return steps[0] if len(steps) == 1 else make_pipeline(*steps)

    def _build(self) -> Any:
        from river import base, compose

        assert self.pipeline is not None
        steps = [
            _instantiate(_parse_component(raw, ("pipeline", i)))
            for i, raw in enumerate(self.pipeline)
        ]
        where = _check_steps(
            steps,
            self.task,
            transformer=lambda step: isinstance(step, base.Transformer),
            regressor=lambda step: isinstance(step, base.Regressor),
            classifier=lambda step: isinstance(step, base.Classifier),
        )
        last = steps[-1]
        if self.task == "multiclass" and not last._multiclass:
            raise _PathError(where, f"{type(last).__name__} handles binary targets only")
        return steps[0] if len(steps) == 1 else compose.Pipeline(*steps)

    def build_pipeline(self) -> Any:
        """A fresh, untrained estimator assembled from :attr:`pipeline`: a River pipeline
        for ``river``, a scikit-learn estimator or ``Pipeline`` for ``sklearn``.

        Raises :class:`ValueError` when the spec has no pipeline (see :attr:`retrainable`).
        """
        if self.pipeline is None:
            raise ValueError(
                f"model {self.name} ({self.framework}) has no pipeline: Driftline cannot train it"
            )
        if self.framework == "sklearn":
            return self._build_trainer()
        return self._build()

    def build_metric(self, name: str | None = None) -> Any:
        """A fresh River metric: :attr:`metric`, or the allow-listed ``name``."""
        chosen = name or self.metric
        _check_metric(chosen, self.task, ("metric",))
        return _river_attr(f"metrics.{chosen}")()

    def feature_names(self, featureset: FeatureSetSpec | None = None) -> list[str] | None:
        """The features the model reads: :attr:`features`, else the feature set's, else None."""
        if self.features is not None:
            return list(self.features)
        return featureset.feature_names if featureset is not None else None

    def check_featureset(self, featureset: FeatureSetSpec) -> None:
        """Raise :class:`SpecError` if the feature set is not this spec's, lacks a feature, or
        declares labels of another task."""
        if featureset.name != self.featureset:
            raise SpecError(f"model {self.name} reads {self.featureset}, not {featureset.name}")
        if featureset.label is not None and featureset.label.type != self.task:
            raise SpecError(
                f"model {self.name} is a {self.task} model, but feature set {featureset.name} "
                f"declares {featureset.label.type} labels ({featureset.label.describe()})"
            )
        missing = [f for f in self.features or () if f not in featureset.feature_names]
        if missing:
            raise SpecError(
                f"model {self.name}: feature set {featureset.name} v{featureset.version} has no "
                f"feature {', '.join(map(repr, missing))}; it has: "
                f"{', '.join(featureset.feature_names)}"
            )

    def select(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The model's input from a feature vector: its features, ``None`` values left out.

        Serving and training both call this, so they feed the model the same view.

        >>> spec = ModelSpec(name="m", featureset="f", task="binary", features=["a"],
        ...                  pipeline=["tree.HoeffdingTreeClassifier"])
        >>> spec.select({"a": 1.0, "b": 2.0}), spec.select({"a": None})
        ({'a': 1.0}, {})
        """
        names = self.features if self.features is not None else values.keys()
        return {n: values[n] for n in names if values.get(n) is not None}


def _format_errors(path: Path, exc: ValidationError, lines: dict[tuple[str, ...], int]) -> str:
    problems = []
    for err in exc.errors():
        loc: tuple[str | int, ...] = tuple(err["loc"])
        original = (err.get("ctx") or {}).get("error")
        msg = err["msg"].removeprefix("Value error, ")
        if isinstance(original, _PathError):
            loc = (*loc, *original.path)
            msg = original.message
        line = locate(loc, lines) or 1
        where = ".".join(str(p) for p in loc) or "(top level)"
        problems.append(f"{path}:{line}: {where}: {msg}")
    return "invalid model spec:\n  " + "\n  ".join(problems)


def load_model_spec(path: Path) -> ModelSpec:
    """Load and validate one model-spec YAML file; :class:`SpecError` names the line."""
    data, lines = read_spec_mapping(
        path, "a model spec is a mapping (name, featureset, pipeline …)"
    )
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_errors(path, exc, lines)) from exc


def load_model_specs(directory: Path) -> dict[str, ModelSpec]:
    """Every ``*.yaml`` / ``*.yml`` model spec in ``directory``, by model name."""
    if not directory.is_dir():
        raise SpecError(f"{directory}: model-spec directory not found")
    out: dict[str, ModelSpec] = {}
    for f in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        spec = load_model_spec(f)
        if spec.name in out:
            raise SpecError(f"{f}: model {spec.name!r} is declared twice")
        out[spec.name] = spec
    return out
