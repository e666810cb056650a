"""Batch trainers: models that are refitted on a window instead of learning online.

A model spec with ``framework: sklearn`` and a ``pipeline`` names a scikit-learn-API
estimator (scikit-learn, LightGBM, XGBoost, from the spec's allow-list).  Training
refits a fresh one on the window replayed from ``driftline.features`` joined with
labels (the join retraining uses for River models), holding out the newest slice,
and compares it with the champion on that slice through the champion's runtime,
whatever its framework.

The estimator's input is the numeric matrix serving builds for it
(:meth:`driftline.model_runtimes.FeatureBatch.matrix`): one column per feature in
the spec's order, a missing value as NaN.  So the fitted estimator never sees a
DataFrame (it has no ``feature_names_in_``) and serving's scikit-learn runtime
feeds it the same matrix: no skew between what it learned and what it is asked.
Estimators that cannot take NaN need a ``sklearn.impute.SimpleImputer`` step.

No sockets here: the core (:mod:`driftline.training.core`) calls these.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from typing import Any

import numpy as np

from driftline.contracts.errors import FailedPreconditionError, InvalidArgumentError
from driftline.contracts.messages import FeatureVector, LabelValue
from driftline.model_runtimes import (
    Datatype,
    FeatureBatch,
    ModelRuntime,
    ModelSignature,
    Predictions,
)
from driftline.model_runtimes.sklearn_runtime import SklearnRuntime
from driftline.specs import FeatureSetSpec, ModelSpec, metric_key
from driftline.training.label_join import JoinedExample
from driftline.training.learner import EvalExample, LineageTracker, Prediction, eval_scores
from driftline.training.retrain import LOGGED_SKIPS, FreshCandidate, split_holdout

log = logging.getLogger(__name__)

__all__ = [
    "BatchLearner",
    "evaluate_runtime",
    "feature_names",
    "fit_window",
    "library_versions",
    "signature_of",
]

_DATATYPES: dict[str, Datatype] = {
    "float": "FP64",
    "int": "INT64",
    "bool": "BOOL",
    "string": "BYTES",
}


def feature_names(spec: ModelSpec, featureset: FeatureSetSpec | None) -> list[str]:
    """The columns of the model's input, in order: the spec's ``features``, else all of its
    feature set's.  Raises :class:`FailedPreconditionError` when neither names them."""
    names = spec.feature_names(featureset)
    if not names:
        raise FailedPreconditionError(
            f"model {spec.name} lists no features and its feature set {spec.featureset} is not "
            "declared where training reads feature sets (training.featuresets_dir): a batch "
            "model needs its column order; list `features` in its spec"
        )
    return names


def signature_of(
    names: Sequence[str],
    task: Any,
    featureset: FeatureSetSpec | None,
    classes: Sequence[Any] | None = None,
) -> ModelSignature:
    """The input signature of ``names``, typed as the feature set declares its fields
    (aggregates and undeclared names are FP64), for ``task``."""
    types: dict[str, Datatype] = {}
    if featureset is not None:
        for name, f in featureset.fields.items():
            types[name] = _DATATYPES.get(f.type, "FP64")
    return ModelSignature.of(names, task=task, datatypes=types, classes=classes)


@cache
def _distributions() -> Mapping[str, list[str]]:
    # Scans every installed distribution (a fraction of a second): once per process.
    return packages_distributions()


def _distributions_of(model: Any) -> set[str]:
    """The distributions whose classes make up ``model`` (a Pipeline's steps included)."""
    objects = [model, *(step for _, step in getattr(model, "steps", []))]
    roots = {type(o).__module__.split(".", 1)[0] for o in objects}
    dists: set[str] = set()
    for root in roots:
        dists.update(_distributions().get(root, []))
    return dists


@cache
def _version_of(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def library_versions(model: Any) -> dict[str, str]:
    """``{distribution: version}`` of what wrote a fitted estimator: scikit-learn, numpy,
    and LightGBM / XGBoost when its steps come from them (recorded with the version, so a
    runtime with other versions can be told apart from a corrupt artifact)."""
    dists = {"scikit-learn", "numpy", *_distributions_of(model)}
    out = {d: v for d in sorted(dists) if (v := _version_of(d)) is not None}
    return out


# -- the estimator's input ---------------------------------------------------------------


def model_input(values: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A vector's values as the model reads them: its features, missing ones left out."""
    return {n: values[n] for n in names if values.get(n) is not None}


def _row(x: Mapping[str, Any], names: Sequence[str]) -> list[float]:
    return [math.nan if x.get(n) is None else float(x[n]) for n in names]


def to_matrix(
    rows: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> tuple[np.ndarray, list[int]]:
    """The ``[n, k]`` float matrix of ``rows`` (missing → NaN) and the indexes of rows that
    could not be converted (a non-numeric value; they are left out of the matrix).

    The conversion is :meth:`FeatureBatch.matrix`, the one serving uses; only when it
    refuses a column are rows converted one by one to find the ones at fault.
    """
    try:
        return FeatureBatch.from_rows(rows, names).matrix(), []
    except InvalidArgumentError:
        pass
    kept: list[list[float]] = []
    bad: list[int] = []
    for i, x in enumerate(rows):
        try:
            kept.append(_row(x, names))
        except (TypeError, ValueError):
            bad.append(i)
    matrix = np.asarray(kept, dtype=np.float64).reshape(len(kept), len(names))
    return matrix, bad


# -- fitting -------------------------------------------------------------------------------


def fit_window(
    spec: ModelSpec, window: Sequence[JoinedExample[Any]], names: Sequence[str]
) -> FreshCandidate:
    """Fit a fresh ``spec.build_pipeline()`` on all but the newest slice of ``window``
    (event-time order; labels already checked by the caller).

    Raises :class:`FailedPreconditionError` naming the problem when there is nothing to
    fit or the estimator refuses the data (one class only, NaN for an estimator without
    an imputer …): retrying the same window cannot help.
    """
    held = split_holdout(len(window), spec.retraining.holdout, spec.promotion.min_eval_examples)
    train, test = window[: len(window) - held], window[len(window) - held :]
    rows = [model_input(ex.vector.values, names) for ex in train]
    x, bad = to_matrix(rows, names)
    skipped = set(bad)
    for n, i in enumerate(bad):
        if n < LOGGED_SKIPS:
            log.warning("fitting %s leaves out event %s: a feature value is not a number (%s)",
                        spec.name, train[i].event_id, rows[i])  # fmt: skip
    if len(bad) > LOGGED_SKIPS:
        log.warning("fitting %s left out %d examples with non-numeric values (first %d logged)",
                    spec.name, len(bad), LOGGED_SKIPS)  # fmt: skip
    kept = [ex for i, ex in enumerate(train) if i not in skipped]
    if not kept:
        raise FailedPreconditionError(
            f"model {spec.name}: no example of the window ({len(window)}, {held} held out) "
            "to fit on"
        )
    y = np.asarray([ex.label.label for ex in kept])
    classes = set(y.tolist())
    if spec.task != "regression" and len(classes) < 2:
        # Some estimators fit a constant model without complaint; none is worth registering.
        raise FailedPreconditionError(
            f"model {spec.name}: the {len(kept)} examples to fit on all have label "
            f"{next(iter(classes))!r}; a {spec.task} classifier needs at least two classes"
        )
    model = spec.build_pipeline()
    _route_lightgbm_logs(model)
    try:
        model.fit(x, y)
    except (ValueError, TypeError) as exc:
        raise FailedPreconditionError(
            f"model {spec.name}: {type(model).__name__} refused the window of {len(kept)} "
            f"examples: {exc}"
        ) from exc
    lineage = LineageTracker(featureset=spec.featureset)
    for ex in kept:
        lineage.add(ex)
    holdout = [
        EvalExample(model_input(ex.vector.values, names), ex.label.label, ex.event_time,
                    Prediction())
        for ex in test
    ]  # fmt: skip
    trained_x = [rows[i] for i in range(len(train)) if i not in skipped]
    return FreshCandidate(model, lineage, holdout, len(kept), trained_x, len(bad))


_LIGHTGBM_LOG = logging.getLogger("lightgbm")


def _route_lightgbm_logs(model: Any) -> None:
    """Send LightGBM's messages to the ``lightgbm`` logger (warnings and up by default)
    instead of stdout: a fit prints a dozen ``[Info]`` lines otherwise."""
    if "lightgbm" not in _distributions_of(model):
        return
    import lightgbm

    if _LIGHTGBM_LOG.level == logging.NOTSET:
        _LIGHTGBM_LOG.setLevel(logging.WARNING)
    lightgbm.register_logger(_LIGHTGBM_LOG)


def fitted_runtime(fit: FreshCandidate, signature: ModelSignature) -> SklearnRuntime:
    """The scikit-learn runtime of a fitted estimator (as serving will load it)."""
    return SklearnRuntime(fit.model, signature)


# -- evaluating any runtime ----------------------------------------------------------------


class ClassValues:
    """Maps the ``str`` class names of :class:`Predictions` back to label values.

    River's metrics compare a probability dict's keys with the true labels, so
    ``{"1": 0.9}`` must become ``{1: 0.9}``.  A runtime that knows its classes at
    load (scikit-learn's ``classes_``) says so in its signature; for the others the
    labels seen so far are the reference.
    """

    def __init__(self) -> None:
        self.seen: dict[str, LabelValue] = {}

    def learn(self, y: LabelValue) -> None:
        """Remember a label value (the first of each ``str`` form wins)."""
        self.seen.setdefault(str(y), y)

    def of(self, runtime: ModelRuntime) -> dict[str, Any]:
        """``str(class) -> class`` for ``runtime``'s predictions."""
        known: dict[str, Any] = dict(self.seen)
        if runtime.signature.classes is not None:
            known.update({str(c): c for c in runtime.signature.classes})
        return known


def _prediction(scored: tuple[Any, dict[str, float]], known: Mapping[str, Any]) -> Prediction:
    label, probs = scored
    if isinstance(label, str):
        label = known.get(label, label)
    if not probs:
        return Prediction(label, None)
    return Prediction(label, {known.get(k, k): p for k, p in probs.items()})


def predict_all(
    runtime: ModelRuntime, rows: Sequence[Mapping[str, Any]], known: Mapping[str, Any]
) -> list[Prediction | None]:
    """``runtime``'s prediction of every row, in one :meth:`ModelRuntime.predict` call;
    when the batch is refused, row by row, a row the model raises on being None."""
    try:
        preds: Predictions = runtime.predict(FeatureBatch.from_rows(rows, runtime.names))
        return [_prediction(preds.scored(i), known) for i in range(len(preds))]
    except Exception:
        log.debug("the batch was refused; scoring it row by row", exc_info=True)
    out: list[Prediction | None] = []
    for row in rows:
        try:
            out.append(_prediction(runtime.predict_one(row), known))
        except Exception:
            out.append(None)
    return out


def evaluate_runtime(
    runtime: ModelRuntime,
    examples: Sequence[EvalExample],
    spec: ModelSpec,
    metric_names: Sequence[str],
    classes: ClassValues | None = None,
) -> dict[str, float]:
    """Score ``runtime`` on ``examples``: ``{metric_key: value, "eval_examples": n}``, the
    same figures :func:`driftline.training.learner.evaluate` gives a River model.

    An example the model raises on is left out (not counted) and logged.
    """
    known = ClassValues() if classes is None else classes
    for ex in examples:
        known.learn(ex.y)
    metrics = {name: spec.build_metric(name) for name in metric_names}
    preds = predict_all(runtime, [ex.x for ex in examples], known.of(runtime))
    n = failed = 0
    for ex, pred in zip(examples, preds, strict=True):
        if pred is None:
            failed += 1
            continue
        pred.score(metrics.values(), ex.y)
        n += 1
    if failed:
        log.warning("%s: %d held-out example(s) left out of the evaluation of %s: the model "
                    "raised", spec.name, failed, runtime.describe())  # fmt: skip
    return eval_scores(metrics, n)


# -- the stream ------------------------------------------------------------------------------

SCORE_BATCH = 256
"""Joined examples whose arrival predictions are made in one call into the model."""


@dataclass(frozen=True)
class Arrival(Prediction):
    """A vector as it arrived, with the model in use then: its prediction is made later,
    in a batch (one call into the model; a tree ensemble answers one row ~100x slower
    per row than 256), by that same model."""

    runtime: ModelRuntime | None = None
    x: dict[str, Any] = field(default_factory=dict)


class BatchLearner:
    """The online side of a batch model: its prequential metric and the schedule's count.

    A batch model learns nothing example by example.  Each arriving vector is predicted
    by the model in use when it arrived (the last fit, or the champion loaded at start
    until this process fits one), and that prediction is scored when the label joins:
    the prequential figure of the model in use.  The predictions are made in batches
    of :data:`SCORE_BATCH` joined examples and at every :meth:`flush` (the Kafka loop
    flushes after each poll).  :attr:`learned` counts labelled examples for the schedule.
    """

    def __init__(self, spec: ModelSpec, names: Sequence[str], signature: ModelSignature) -> None:
        self.spec = spec
        self.names = list(names)
        self.signature = signature
        self.runtime: ModelRuntime | None = None
        """The model predicting arrivals (None until one is fitted or loaded)."""
        self.metric = spec.build_metric()
        self.promotion_metric = spec.build_metric(spec.promotion.metric)
        self.learned = 0
        self.measured = 0
        """Labelled predictions scored that measure a model (:meth:`Prediction.measures`):
        those of a fitted or loaded model."""
        self.classes = ClassValues()
        self.last_event_time: datetime | None = None
        """The newest event time of a labelled example (where a time window ends)."""
        self.prediction_errors = 0
        self.recent: deque[EvalExample] = deque(maxlen=0)
        """Unused: a batch model is compared on the held-out slice of its window."""
        self._unscored: list[tuple[Arrival, LabelValue]] = []

    def use(self, runtime: ModelRuntime) -> None:
        """Predict arrivals with ``runtime`` from now on."""
        self.runtime = runtime

    def features(self, vector: FeatureVector) -> dict[str, Any]:
        """The model's view of a vector."""
        return model_input(vector.values, self.names)

    def observe(self, vector: FeatureVector) -> Prediction:
        """Note the model in use for a newly arrived vector (nothing before one exists);
        its prediction is made in a batch once the label has joined."""
        if self.runtime is None:
            return Prediction()
        return Arrival(runtime=self.runtime, x=self.features(vector))

    def learn(self, example: JoinedExample[Prediction]) -> None:
        """Count the example; its arrival prediction is scored with the next batch."""
        y = example.label.label
        self.classes.learn(y)
        arrival = example.attachment
        if isinstance(arrival, Arrival) and arrival.runtime is not None:
            self._unscored.append((arrival, y))
            if len(self._unscored) >= SCORE_BATCH:
                self.flush()
        else:
            self._score(arrival, y)
        self.learned += 1
        t = example.event_time
        if self.last_event_time is None or t > self.last_event_time:
            self.last_event_time = t

    def _score(self, prediction: Prediction, y: LabelValue) -> None:
        prediction.score((self.metric, self.promotion_metric), y)
        if prediction.measures(self.metric):
            self.measured += 1

    def flush(self) -> None:
        """Make the pending arrival predictions (one call per model in use) and score them.

        A row the model raises on is not scored (counted in :attr:`prediction_errors`);
        the example still counts: the next fit learns from it.
        """
        pending, self._unscored = self._unscored, []
        groups: dict[int, list[tuple[Arrival, LabelValue]]] = {}
        for item in pending:
            groups.setdefault(id(item[0].runtime), []).append(item)
        for items in groups.values():
            runtime = items[0][0].runtime
            assert runtime is not None
            preds = predict_all(runtime, [a.x for a, _ in items], self.classes.of(runtime))
            failed = 0
            for (_, y), pred in zip(items, preds, strict=True):
                if pred is None:
                    failed += 1
                else:
                    self._score(pred, y)
            if failed and self.prediction_errors == 0:
                log.warning("%s: %s raised predicting arrivals; such examples are not scored",
                            self.spec.name, runtime.describe())  # fmt: skip
            self.prediction_errors += failed

    @property
    def prequential(self) -> float:
        """The prequential value of the spec's metric so far (up to the last flush)."""
        return float(self.metric.get())

    def metrics(self) -> dict[str, float]:
        """Prequential metrics of the models in use, as recorded with a version."""
        self.flush()
        return {
            f"prequential_{metric_key(self.spec.metric)}": float(self.metric.get()),
            "stream_examples": float(self.learned),
        }
