"""Online learning with prequential (test-then-train) evaluation, and lineage tracking.

The learner predicts when a feature vector *arrives* (as serving would, before
the label exists) and, when the label joins, learns and scores that earlier
prediction.  This is exactly River's
``evaluate.progressive_val_score(..., delay=...)`` protocol, so the prequential
figure on ``/metrics`` is comparable with River's own.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from driftline.contracts.messages import FeatureVector, LabelValue, Lineage, OffsetRange
from driftline.specs import ModelSpec, metric_key
from driftline.training.label_join import JoinedExample, Position

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a model said about one input: the label and, for classifiers, probabilities."""

    label: Any = None
    proba: dict[Any, float] | None = None
    error: str | None = None
    """Set when the model raised instead of predicting (the example is then not learned)."""
    informed: bool = True
    """False when the model had learned nothing yet when it predicted: such a prediction
    is scored as River scores it, but is no evidence of the model's quality (see
    :meth:`measures`)."""

    def for_metric(self, metric: Any) -> Any:
        """The form ``metric`` wants: probabilities unless it requires labels."""
        # Regression metrics have no ``requires_labels``; a regressor gives no proba.
        if self.proba is None or metric.requires_labels:
            return self.label
        return self.proba

    def measures(self, metric: Any) -> bool:
        """Whether scoring this prediction with ``metric`` measures a model: it was made
        by a model that had learned something, and ``metric`` can use it.

        Until one such prediction is scored the prequential figure is not a measurement
        (River's metrics read 0 with nothing scored), so it is not exported.
        """
        return self.informed and _usable(self.for_metric(metric))

    def score(self, metrics: Iterable[Any], y: LabelValue) -> None:
        """Update each of ``metrics`` with this prediction of an example labelled ``y``."""
        for m in metrics:
            y_pred = self.for_metric(m)
            if _usable(y_pred):
                m.update(y, y_pred)


def eval_scores(metrics: Mapping[str, Any], examples: int) -> dict[str, float]:
    """``{metric_key: value, "eval_examples": examples}`` of metrics built by name."""
    out = {metric_key(name): float(m.get()) for name, m in metrics.items()}
    out["eval_examples"] = float(examples)
    return out


def predict(model: Any, x: Mapping[str, Any], *, want_proba: bool) -> Prediction:
    """``model``'s prediction for ``x`` (probabilities only when a metric needs them)."""
    proba = model.predict_proba_one(x) if want_proba else None
    if proba is not None:
        label = max(proba, key=proba.__getitem__) if proba else None
        return Prediction(label, proba)
    return Prediction(model.predict_one(x), None)


def _usable(y_pred: Any) -> bool:
    # River skips the metric update when the model could not answer yet.
    return y_pred is not None and y_pred != {}


@dataclass(frozen=True)
class EvalExample:
    """One recent labeled example kept to compare candidate and champion."""

    x: dict[str, Any]
    y: LabelValue
    event_time: datetime
    prediction: Prediction
    """The online learner's prediction, made before it learned this example."""


def evaluate(
    model: Any, examples: Iterable[EvalExample], spec: ModelSpec, metric_names: Sequence[str]
) -> dict[str, float]:
    """Score ``model`` (frozen) on ``examples``: ``{metric_key: value, "eval_examples": n}``.

    An example the model raises on is left out (not counted in ``eval_examples``)
    and logged, so one input a model cannot take does not fail a comparison.
    """
    metrics = {name: spec.build_metric(name) for name in metric_names}
    want_proba = spec.task != "regression" and any(not m.requires_labels for m in metrics.values())
    n = failed = 0
    for ex in examples:
        try:
            pred = predict(model, ex.x, want_proba=want_proba)
        except Exception as exc:
            # Isolates this example: the model is scored on the others.
            failed += 1
            if failed == 1:
                log.warning("%s: the model raised on a held-out example (%s: %s); left out",
                            spec.name, type(exc).__name__, exc, exc_info=True)  # fmt: skip
            continue
        pred.score(metrics.values(), ex.y)
        n += 1
    if failed:
        log.warning("%s: %d held-out example(s) left out of the evaluation: the model raised",
                    spec.name, failed)  # fmt: skip
    return eval_scores(metrics, n)


def score_recorded(
    examples: Iterable[EvalExample], spec: ModelSpec, metric_names: Sequence[str]
) -> dict[str, float]:
    """Score the predictions recorded in ``examples`` (made before each was learned)."""
    metrics = {name: spec.build_metric(name) for name in metric_names}
    n = 0
    for ex in examples:
        ex.prediction.score(metrics.values(), ex.y)
        n += 1
    return eval_scores(metrics, n)


@dataclass
class LineageTracker:
    """Accumulates what a model learned from: offsets per partition, event times, count."""

    featureset: str
    featureset_version: int = 0
    examples: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None
    ranges: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    def add(self, example: JoinedExample[Any]) -> None:
        """Record one learned example."""
        self.examples += 1
        self.featureset_version = max(self.featureset_version, example.vector.featureset_version)
        t = example.event_time
        if self.first_time is None or t < self.first_time:
            self.first_time = t
        if self.last_time is None or t > self.last_time:
            self.last_time = t
        for pos in (example.vector_pos, example.label_pos):
            if pos is not None:
                self._offset(pos)

    def _offset(self, pos: Position) -> None:
        key = (pos.topic, pos.partition)
        first, last = self.ranges.get(key, (pos.offset, pos.offset))
        self.ranges[key] = (min(first, pos.offset), max(last, pos.offset))

    def lineage(self, *, parent_version: int | None, trigger_id: str | None) -> Lineage:
        """The lineage of a version trained on what was recorded so far."""
        return Lineage(
            featureset=self.featureset,
            featureset_version=self.featureset_version,
            offsets=[
                OffsetRange(topic=t, partition=p, first=f, last=last)
                for (t, p), (f, last) in sorted(self.ranges.items())
            ],
            event_time_from=self.first_time,
            event_time_to=self.last_time,
            examples=self.examples,
            parent_version=parent_version,
            trigger_id=trigger_id,
        )


class OnlineLearner:
    """A River pipeline learning test-then-train, with its prequential metric.

    ``observe`` is the ``attach`` callback of :class:`LabelJoin`: it predicts on
    arrival (the test).  ``learn`` trains, then scores that earlier prediction.
    The last ``eval_window`` examples (with the pre-learning predictions) are
    kept for the candidate-vs-champion comparison.
    """

    def __init__(self, spec: ModelSpec, *, eval_window: int, model: Any = None) -> None:
        self.spec = spec
        self.model = model if model is not None else spec.build_pipeline()
        self.metric = spec.build_metric()
        self.promotion_metric = spec.build_metric(spec.promotion.metric)
        self._want_proba = spec.task != "regression" and (
            not self.metric.requires_labels or not self.promotion_metric.requires_labels
        )
        self.recent: deque[EvalExample] = deque(maxlen=eval_window)
        self.learned = 0
        self.measured = 0
        """Labelled predictions scored that measure the model (:meth:`Prediction.measures`)."""
        self.lineage = LineageTracker(featureset=spec.featureset)

    def features(self, vector: FeatureVector) -> dict[str, Any]:
        """The model's view of a vector (see :meth:`ModelSpec.select`)."""
        return self.spec.select(vector.values)

    def observe(self, vector: FeatureVector) -> Prediction:
        """Predict for a newly arrived vector, before its label exists."""
        prediction = predict(self.model, self.features(vector), want_proba=self._want_proba)
        if not self.learned:
            return replace(prediction, informed=False)
        return prediction

    def learn(self, example: JoinedExample[Prediction]) -> None:
        """Train on the example, then score the prediction made on its arrival.

        The prediction is the one :meth:`observe` made before the label existed, so
        the order of these two steps does not change the prequential figure; training
        first means that when ``learn_one`` raises nothing of the example is recorded
        (metrics, count, lineage, recent window): the caller may skip it.
        """
        x = self.features(example.vector)
        y = example.label.label
        self.model.learn_one(x, y)
        example.attachment.score((self.metric, self.promotion_metric), y)
        if example.attachment.measures(self.metric):
            self.measured += 1
        self.learned += 1
        self.lineage.add(example)
        self.recent.append(EvalExample(x, y, example.event_time, example.attachment))

    @property
    def prequential(self) -> float:
        """The prequential value of the spec's metric so far."""
        return float(self.metric.get())

    def metrics(self) -> dict[str, float]:
        """Prequential metrics, as recorded with a version."""
        out = {
            metric_key(self.spec.metric): float(self.metric.get()),
            "examples": float(self.learned),
        }
        out[f"prequential_{metric_key(self.spec.promotion.metric)}"] = float(
            self.promotion_metric.get()
        )
        return out


def recent_after(examples: Iterable[EvalExample], since: datetime | None) -> list[EvalExample]:
    """Examples with an event time after ``since`` (all when None): data a model has not seen."""
    if since is None:
        return list(examples)
    cut = since if since.tzinfo else since.replace(tzinfo=UTC)
    return [e for e in examples if e.event_time > cut]
