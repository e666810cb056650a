"""One bad example never stops training: wrong-type labels and raising models are skipped.

A label ``"maybe"`` among a binary model's 0/1 labels, learned, broke River's
Hoeffding tree at its next split attempt and took the training service down for
good (issue 14).  The core now checks every joined label against the model's
label type before learning, and isolates an example the model raises on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from river import stream
from river.datasets import synth

from driftline.contracts.messages import FeatureVector, LabelValue, RetrainRequest, ValidLabel
from driftline.contracts.topics import FEATURES, LABELS_VALID
from driftline.drift_stats import Reference
from driftline.settings import PlatformSettings
from driftline.specs import LabelSpec, ModelSpec, load_model_spec
from driftline.telemetry import ConsumerHealth, ServiceMetrics
from driftline.training.candidates import InMemorySink
from driftline.training.core import CoreConfig, SkipReason, TrainingCore
from driftline.training.kafka_loop import KafkaTrainingLoop
from driftline.training.label_join import JoinedExample, Position
from driftline.training.learner import Prediction
from driftline.training.retrain import ReplayPlan

ROOT = Path(__file__).resolve().parents[3]
N, DELAY = 1500, 20


@pytest.fixture(scope="module")
def loans() -> ModelSpec:
    return load_model_spec(ROOT / "examples" / "models" / "loans.yaml")


def _health() -> ConsumerHealth:
    return ConsumerHealth(CollectorRegistry(), stall_after_s=60)


def _core(spec: ModelSpec, label_spec: LabelSpec | None = None) -> TrainingCore:
    config = CoreConfig(snapshot_every=10**9, allowed_lateness_s=10 * DELAY)
    return TrainingCore(spec, InMemorySink(), config, label_spec=label_spec, health=_health())


Event = tuple[int, dict[str, Any], LabelValue | None]
"""``(i, x, None)``: the vector of event ``e<i>``; ``(i, x, y)``: its label."""


def _records(
    events: list[Event], vector: Callable[..., FeatureVector], label: Callable[..., ValidLabel]
) -> list[FeatureVector | ValidLabel]:
    return [vector(i, values=x) if y is None else label(i, y=y) for i, x, y in events]


def _feed(core: TrainingCore, records: list[FeatureVector | ValidLabel]) -> None:
    """Each record in order, as read from partition 0 of its topic at offset = index."""
    for offset, record in enumerate(records):
        if isinstance(record, FeatureVector):
            core.on_vector(record, Position(FEATURES.name, 0, offset))
        else:
            core.on_label(record, Position(LABELS_VALID.name, 0, offset))


def _agrawal(seed: int, n: int = N) -> list[Event]:
    return list(stream.simulate_qa(synth.Agrawal(seed=seed).take(n), None, DELAY))


class Recording:
    """A River-compatible wrapper that records what reaches the model and raises on demand.

    ``predict_one`` / ``predict_proba_one`` raise ``ValueError`` for an input whose
    ``salary`` is -1; ``learn_one`` raises ``ValueError`` when ``salary`` is -2.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.learned: list[LabelValue] = []

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        if x.get("salary") == -1:
            raise ValueError("cannot score a salary of -1")
        proba: dict[Any, float] = self.model.predict_proba_one(x)
        return proba

    def predict_one(self, x: dict[str, Any]) -> Any:
        if x.get("salary") == -1:
            raise ValueError("cannot score a salary of -1")
        return self.model.predict_one(x)

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        if x.get("salary") == -2:
            raise ValueError("cannot learn a salary of -2")
        self.model.learn_one(x, y)
        self.learned.append(y)


def test_a_maybe_label_is_skipped_and_the_tree_keeps_learning(
    loans: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = _agrawal(seed=4)
    poisoned = [(i, x, "maybe" if y is not None and i == 60 else y) for i, x, y in events]
    # The input is a real poison pill: the spec's tree, fed it, raises within the stream.
    raw = loans.build_pipeline()
    with pytest.raises(TypeError, match="not supported between instances"):
        for _, x, y in poisoned:
            if y is not None:
                raw.learn_one(loans.select(x), y)

    core = _core(loans, LabelSpec(type="binary"))
    with caplog.at_level(logging.WARNING):
        _feed(core, _records(poisoned, make_vector, make_label))

    assert core.learner.learned == N - 1  # every example but the one with "maybe"
    assert core.skipped == {SkipReason.LABEL_TYPE: 1}
    assert core.health is not None
    assert core.health.skipped(LABELS_VALID.name, "label_type") == 1
    assert core.learner.prequential > 0.85  # the tree learned on, unharmed
    skip_lines = [r.getMessage() for r in caplog.records if "skipped the record" in r.getMessage()]
    [line] = skip_lines
    assert "driftline.labels.valid[0]@" in line and "(event e60)" in line
    assert "'maybe' is not a binary class" in line and f"model {loans.name}" in line


REGRESSION = ModelSpec(
    name="amount", featureset="loans", task="regression", features=["salary", "age"],
    pipeline=["linear_model.LinearRegression"], metric="MAE",
    promotion={"metric": "MAE"},
)  # fmt: skip
MULTICLASS = ModelSpec(
    name="grade", featureset="loans", task="multiclass", features=["salary", "age"],
    pipeline=["tree.HoeffdingTreeClassifier"], metric="Accuracy",
)  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "label_spec", "good", "bad", "why"),
    [
        (REGRESSION, None, [1.5, 2, 0.0], float("nan"), "is not a finite number"),
        (REGRESSION, None, [1.5, 2, 0.0], "3.0", "expected a number"),
        (
            MULTICLASS,
            LabelSpec(type="multiclass", classes=["a", "b", "c"]),
            ["a", "b", "c"],
            "d",
            "is not one of the declared classes",
        ),
        # Undeclared: the class type is that of the first label learned (a string here).
        (MULTICLASS, None, ["a", "b", "c"], 7, "expected a string class"),
        (None, None, [0, 1, True], "maybe", "is not a binary class"),
    ],
)
def test_a_label_not_of_the_models_type_never_reaches_the_model(
    loans: ModelSpec,
    spec: ModelSpec | None,
    label_spec: LabelSpec | None,
    good: list[LabelValue],
    bad: LabelValue,
    why: str,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = spec or loans
    core = _core(spec, label_spec)
    model = core.learner.model = Recording(core.learner.model)
    x = {"salary": 50_000.0, "age": 40}
    labels = [*good[:1], bad, *good[1:]]
    events: list[Event] = []
    for i, y in enumerate(labels):
        events += [(i, x, None), (i, x, y)]
    with caplog.at_level(logging.WARNING):
        _feed(core, _records(events, make_vector, make_label))

    assert model.learned == good
    assert core.learner.learned == len(good)
    assert core.skipped[SkipReason.LABEL_TYPE] == 1
    assert core.health is not None
    assert core.health.skipped(LABELS_VALID.name, "label_type") == 1
    [line] = [r.getMessage() for r in caplog.records if "skipped the record" in r.getMessage()]
    assert "(event e1)" in line and why in line


def test_a_model_that_raises_on_one_example_skips_only_that_example(
    loans: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = _records(_agrawal(seed=8), make_vector, make_label)
    clean = _core(loans)
    _feed(clean, records)

    # The same stream with two crafted examples in it (event times inside the stream's):
    # one the model cannot score on arrival, one it cannot learn.  Each is labelled
    # right away.
    def crafted(event_id: str, at: int, salary: float) -> list[FeatureVector | ValidLabel]:
        values = {**records[0].values, "salary": salary}  # type: ignore[union-attr]
        update = {"event_id": event_id}
        return [
            make_vector(at, values=values).model_copy(update=update),
            make_label(at, y=1).model_copy(update=update),
        ]

    poisoned = list(records)
    poisoned[300:300] = crafted("bad-predict", 150, -1)
    poisoned[900:900] = crafted("bad-learn", 450, -2)
    core = _core(loans)
    model = core.learner.model = Recording(core.learner.model)
    with caplog.at_level(logging.WARNING):
        _feed(core, poisoned)

    assert core.skipped == {SkipReason.MODEL_ERROR: 2}
    assert core.health is not None
    # Predicting failed on the vector; learning failed when the label joined.
    assert core.health.skipped(FEATURES.name, "model_error") == 1
    assert core.health.skipped(LABELS_VALID.name, "model_error") == 1
    # Neither left a trace: the model, its count and its prequential figure are exactly
    # those of the stream without them (test-then-train order unchanged).
    assert len(model.learned) == core.learner.learned == clean.learner.learned == N
    assert core.learner.prequential == clean.learner.prequential
    assert core.learner.metrics() == clean.learner.metrics()
    assert [e.y for e in core.learner.recent] == [e.y for e in clean.learner.recent]
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "(event bad-predict): model_error: model loans: predict raised ValueError" in messages
    assert "(event bad-learn): model_error: model loans: learn_one raised ValueError" in messages
    # The traceback is logged for the bug report.
    assert any(r.exc_info and "bad-predict" in r.getMessage() for r in caplog.records)


async def test_retraining_skips_a_raising_example_and_a_label_of_the_wrong_type(
    loans: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    rows = list(synth.Agrawal(seed=2).take(3000))
    examples = [
        JoinedExample(make_vector(i, values=x), make_label(i, y=y), Prediction(), None, None)
        for i, (x, y) in enumerate(rows)
    ]
    # Within the training part of the window: a label "maybe" (it would break the tree),
    # and a string where the tree has learned numbers (a real River pipeline raises).
    examples[700] = JoinedExample(
        examples[700].vector, make_label(700, y="maybe"), Prediction(), None, None
    )
    examples[800] = JoinedExample(
        make_vector(800, values={**rows[800][0], "salary": "high"}),
        examples[800].label, Prediction(), None, None,
    )  # fmt: skip

    async def replay(plan: ReplayPlan) -> list[JoinedExample[Any]]:
        return list(examples)

    sink = InMemorySink()
    core = TrainingCore(loans, sink, label_spec=LabelSpec(type="binary"))
    request = RetrainRequest(
        request_id="rr-poison", model_name="loans", reason="drift",
        since_event_time=examples[500].event_time, requested_at=examples[-1].event_time,
    )  # fmt: skip
    outcome = await core.retrain(request, replay)

    assert outcome is not None and outcome.version.version == 1
    lineage = outcome.version.lineage
    assert lineage is not None
    # 2,499 labels of the right type after the onset: 500 held out, 1,998 of the
    # remaining 1,999 learned (the one the tree raised on is left out).
    assert outcome.version.metrics["eval_examples"] == 500
    assert lineage.examples == 1998
    reference = Reference.from_dict(sink.versions["loans"][0].spec["reference"])
    assert reference.count == 1998
    assert outcome.version.metrics["accuracy"] > 0.8
    # Skips of a replay are not counted again as skipped records of the stream.
    assert core.skipped == {}


def test_a_declared_label_type_of_another_task_is_refused(loans: ModelSpec) -> None:
    with pytest.raises(ValueError, match="binary model; labels of type regression"):
        TrainingCore(loans, InMemorySink(), label_spec=LabelSpec(type="regression"))


def test_nan_never_becomes_a_regression_target() -> None:
    core = _core(REGRESSION)
    assert core.check_label(2) == 2.0
    for bad in (math.inf, float("nan"), True):
        with pytest.raises(ValueError):
            core.check_label(bad)


@dataclass
class _Record:
    """What the loop reads of a consumer record."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


class _BrokenCore(TrainingCore):
    """A core with a bug that one record exercises (outside the model)."""

    def on_vector(self, vector: FeatureVector, pos: Position | None = None) -> int:
        if vector.event_id == "e13":
            raise KeyError("a bug in the join")
        return super().on_vector(vector, pos)


def test_the_online_loop_skips_unreadable_records_and_isolates_a_failing_one(
    loans: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = ServiceMetrics("training")
    health = ConsumerHealth(metrics.registry, stall_after_s=60)
    broken = _BrokenCore(loans, InMemorySink(), health=health)
    other = TrainingCore(loans.model_copy(update={"name": "other"}), InMemorySink(), health=health)
    loop = KafkaTrainingLoop([broken, other], PlatformSettings(), metrics, health)
    records = [
        _Record(FEATURES.name, 2, 40, b"{not json"),
        _Record(LABELS_VALID.name, 1, 41, None),  # a tombstone
        _Record(FEATURES.name, 2, 42, make_vector(13).model_dump_json().encode()),
        _Record(FEATURES.name, 2, 43, make_vector(14).model_dump_json().encode()),
    ]
    with caplog.at_level(logging.WARNING):
        for r in records:
            loop._feed(r)

    assert health.skipped(FEATURES.name, "unreadable") == 1
    assert health.skipped(LABELS_VALID.name, "unreadable") == 1
    assert health.skipped(FEATURES.name, "processing_error") == 1
    # The other model still got the record the broken one failed on, and both the next.
    assert other.join.pending == 2 and broken.join.pending == 1
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "skipped the record at driftline.features[2]@40: unreadable" in messages
    assert (
        "skipped the record at driftline.features[2]@42 (event e13): processing_error: "
        "model loans: KeyError" in messages
    )
    assert any(r.exc_info and "driftline.features[2]@42" in r.getMessage() for r in caplog.records)
