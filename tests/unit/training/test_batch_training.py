"""Batch models (``framework: sklearn`` with a pipeline): fitted on schedule and on retrain
requests from the replayed window, compared with a champion of any framework on the newest
slice, promoted by the same policy, registered as ``sklearn-pickle``.  No sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lightgbm import LGBMClassifier
from river.datasets import synth

from driftline.contracts.errors import DriftlineError, FailedPreconditionError, UnavailableError
from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel, utcnow
from driftline.contracts.topics import FEATURES, LABELS_VALID, RETRAIN
from driftline.model_runtimes import FeatureBatch, load_runtime
from driftline.model_runtimes.sklearn_runtime import SKLEARN_PICKLE
from driftline.settings import PlatformSettings
from driftline.specs import FeatureSetSpec, ModelSpec, load_featureset, load_model_spec
from driftline.telemetry import ConsumerHealth, ServiceMetrics
from driftline.training.batch import (
    BatchLearner,
    evaluate_runtime,
    fit_window,
    library_versions,
    signature_of,
)
from driftline.training.candidates import InMemorySink, NewVersion
from driftline.training.core import CoreConfig, RetrainStatus, TrainingCore
from driftline.training.kafka_loop import KafkaRetrainLoop
from driftline.training.label_join import JoinedExample, Position
from driftline.training.learner import EvalExample, Prediction, evaluate
from driftline.training.retrain import ReplayPlan, examples_needed
from driftline.training.service import unservable_reasons

ROOT = Path(__file__).resolve().parents[3]
DELAY = 10
FEATURES_ORDER = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears",
                  "loan"]  # fmt: skip


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_model_spec(ROOT / "examples" / "models" / "batch" / "loans-gbm.yaml")


@pytest.fixture(scope="module")
def loans() -> FeatureSetSpec:
    return load_featureset(ROOT / "examples" / "featuresets" / "loans.yaml")


class Stream:
    """Agrawal examples fed to a core in arrival order (labels ``DELAY`` events late), and
    the logs a replay reads them back from (with their offsets)."""

    def __init__(
        self,
        core: TrainingCore,
        vector: Callable[..., FeatureVector],
        label: Callable[..., ValidLabel],
    ) -> None:
        self.core, self.vector, self.label = core, vector, label
        self.sent = 0
        self.labelled = 0
        self.joined: list[JoinedExample[Any]] = []
        self.replays: list[ReplayPlan] = []
        self._waiting: list[tuple[FeatureVector, Position, Any]] = []

    def feed(self, n: int, function: int, seed: int, *, values: Callable[..., Any] | None = None,
             labels: Callable[[int, Any], Any] | None = None) -> None:  # fmt: skip
        for x, y in synth.Agrawal(classification_function=function, seed=seed).take(n):
            if values is not None:
                x = values(self.sent, x)
            v = self.vector(self.sent, values=x)
            pos = Position(FEATURES.name, 0, self.sent)
            self.core.on_vector(v, pos)
            self._waiting.append((v, pos, labels(self.sent, y) if labels else y))
            self.sent += 1
            while len(self._waiting) > DELAY:
                self._label_one()
        self.core.flush()

    def _label_one(self) -> None:
        v, vpos, y = self._waiting.pop(0)
        lab = self.label(int(v.event_id[1:]), y=y)
        lpos = Position(LABELS_VALID.name, 0, self.labelled)
        self.labelled += 1
        self.core.on_label(lab, lpos)
        self.joined.append(JoinedExample(v, lab, Prediction(), vpos, lpos))

    async def replay(self, plan: ReplayPlan) -> list[JoinedExample[Any]]:
        """Everything labelled so far (the core selects the window)."""
        self.replays.append(plan)
        return list(self.joined)

    def time_of(self, i: int) -> datetime:
        return self.vector(i).event_time


async def _snapshot_if_due(core: TrainingCore) -> None:
    if core.snapshot_due:
        await core.snapshot()


def _core(spec: ModelSpec, loans: FeatureSetSpec, sink: InMemorySink, **config: Any) -> Any:
    """A core and its stream (the stream's replay is the core's)."""
    holder: dict[str, Stream] = {}

    async def replay(plan: ReplayPlan) -> list[JoinedExample[Any]]:
        return await holder["stream"].replay(plan)

    core = TrainingCore(
        spec, sink, CoreConfig(**({"snapshot_every": 2000} | config)), featureset=loans,
        replay=replay,
    )  # fmt: skip
    return core, holder


def _accuracy(model: Any, xs: list[dict[str, Any]], ys: list[int]) -> float:
    matrix = FeatureBatch.from_rows(xs, FEATURES_ORDER).matrix()
    return float(np.mean(model.predict(matrix) == np.asarray(ys)))


# -- the schedule ---------------------------------------------------------------------------


async def test_a_scheduled_fit_registers_a_sklearn_version_with_its_lineage_and_versions(
    spec: ModelSpec,
    loans: FeatureSetSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    sink = InMemorySink()
    core, holder = _core(spec, loans, sink)
    stream = holder["stream"] = Stream(core, make_vector, make_label)
    for _ in range(3):
        stream.feed(1000, function=2, seed=3)
        await _snapshot_if_due(core)
    [outcome] = core.candidates
    assert outcome.alias == "champion" and outcome.decision.promote
    [stored] = sink.versions[spec.name]
    # A refit: a fresh estimator of the spec, fitted on the replayed window (not the stream).
    assert type(stored.model) is LGBMClassifier
    assert stored.version.framework == "sklearn"
    assert stored.library_versions["scikit-learn"] == version("scikit-learn")
    assert stored.library_versions["numpy"] == version("numpy")
    assert stored.library_versions["lightgbm"] == version("lightgbm")
    assert stored.spec["framework"] == "sklearn"
    assert stored.spec["features"] == FEATURES_ORDER
    assert set(stored.spec["reference"]["features"]) >= {"salary", "age"}
    # The newest slice was held out, the rest fitted: the lineage says which.
    metrics = stored.version.metrics
    window = len(stream.joined)
    assert stream.replays[-1].keep_examples == spec.retraining.window_examples
    assert metrics["eval_examples"] == pytest.approx(window * spec.retraining.holdout, abs=1)
    assert metrics["examples"] == window - metrics["eval_examples"]
    lineage = stored.version.lineage
    assert lineage is not None and lineage.examples == metrics["examples"]
    assert lineage.trigger_id is not None and lineage.trigger_id.startswith("schedule:")
    assert {r.topic for r in lineage.offsets} == {FEATURES.name, LABELS_VALID.name}
    assert lineage.event_time_to is not None
    assert lineage.event_time_to < stream.joined[-1].event_time  # the holdout is not in it
    # The artifact is what serving loads: the sklearn runtime reads it and predicts well.
    artifact = await sink.load_artifact(spec.name, 1)
    assert artifact.artifact_format == SKLEARN_PICKLE
    runtime = load_runtime(
        artifact.framework, artifact.artifact_format, artifact.data,
        signature_of(artifact.spec["features"], "binary", loans), artifact.spec,
    )  # fmt: skip
    fresh = list(synth.Agrawal(classification_function=2, seed=99).take(500))
    preds = runtime.predict(FeatureBatch.from_rows([x for x, _ in fresh], runtime.names))
    hits = sum(int(p) == y for p, (_, y) in zip(preds.labels, fresh, strict=True))
    assert hits / len(fresh) > 0.9
    assert 0.9 < metrics["accuracy"] <= 1.0


async def test_a_window_too_small_to_fit_registers_nothing_until_the_next_schedule(
    spec: ModelSpec,
    loans: FeatureSetSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    sink = InMemorySink()
    core, holder = _core(spec, loans, sink, snapshot_every=1000)
    stream = holder["stream"] = Stream(core, make_vector, make_label)
    stream.feed(1100, function=2, seed=3)
    assert core.snapshot_due
    assert await core.snapshot() is None  # 1,090 labelled, 1,500 needed
    assert sink.versions == {} and not core.snapshot_due
    stream.feed(1000, function=2, seed=4)
    await _snapshot_if_due(core)
    assert [s.version.version for s in sink.versions[spec.name]] == [1]


async def test_arrivals_are_scored_by_the_model_in_use_when_they_arrived(
    spec: ModelSpec,
    loans: FeatureSetSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    sink = InMemorySink()
    core, holder = _core(spec, loans, sink)
    stream = holder["stream"] = Stream(core, make_vector, make_label)
    stream.feed(2100, function=2, seed=3)
    await _snapshot_if_due(core)
    learner = core.learner
    assert isinstance(learner, BatchLearner)
    assert learner.metric.cm.total_weight == 0  # nothing to predict with before the first fit
    model = sink.versions[spec.name][0].model
    first = stream.sent
    stream.feed(600, function=0, seed=5)  # after a concept drift
    learner.flush()
    # Prequential = the fitted model's accuracy on exactly the examples labelled since.
    scored = [ex for ex in stream.joined if int(ex.event_id[1:]) >= first]
    expected = _accuracy(
        model, [ex.vector.values for ex in scored], [int(ex.label.label) for ex in scored]
    )
    assert learner.metric.cm.total_weight == len(scored)
    assert learner.prequential == pytest.approx(expected)
    assert learner.prequential < 0.8  # the drift shows in it


async def test_a_scheduled_fit_stays_challenger_while_a_retrain_request_waits(
    spec: ModelSpec,
    loans: FeatureSetSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    sink = InMemorySink()
    core, holder = _core(spec, loans, sink, snapshot_every=1500)
    stream = holder["stream"] = Stream(core, make_vector, make_label)
    stream.feed(1600, function=2, seed=3)
    await _snapshot_if_due(core)
    onset = stream.sent
    stream.feed(100, function=0, seed=5)
    request = RetrainRequest(
        request_id="rr-wait", model_name=spec.name, reason="drift",
        since_event_time=stream.time_of(onset), requested_at=utcnow(),
    )  # fmt: skip
    attempt = await core.attempt_retrain(request, stream.replay)
    assert attempt.status is RetrainStatus.WAITING
    stream.feed(1400, function=0, seed=6)
    assert core.snapshot_due
    outcome = await core.snapshot()
    assert outcome is not None and outcome.alias == "challenger"
    assert "retrain request(s) rr-wait are pending" in outcome.decision.reason


# -- retraining -----------------------------------------------------------------------------


async def test_a_retrain_request_refits_on_the_window_after_the_drift_and_is_promoted(
    spec: ModelSpec,
    loans: FeatureSetSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    sink = InMemorySink()
    core, holder = _core(spec, loans, sink)
    stream = holder["stream"] = Stream(core, make_vector, make_label)
    stream.feed(2500, function=2, seed=3)
    await _snapshot_if_due(core)
    assert sink.aliases[spec.name]["champion"] == 1
    onset = stream.sent
    # A label of the wrong type slipped into the window: left out of the fit, as for River.
    stream.feed(1700, function=0, seed=5, labels=lambda i, y: "maybe" if i == onset + 3 else y)
    request = RetrainRequest(
        request_id="rr-drift", model_name=spec.name, reason="concept drift",
        since_event_time=stream.time_of(onset), requested_at=utcnow(), drift_ids=["d-1"],
    )  # fmt: skip
    attempt = await core.attempt_retrain(request, stream.replay)
    assert attempt.status is RetrainStatus.REGISTERED
    assert attempt.window == len(stream.joined) - onset - 1 >= examples_needed(spec)
    outcome = attempt.outcome
    assert outcome is not None and outcome.alias == "champion", outcome
    assert sink.aliases[spec.name]["champion"] == outcome.version.version == 2
    stored = sink.versions[spec.name][1]
    assert stored.version.framework == "sklearn"
    lineage = stored.version.lineage
    assert lineage is not None and lineage.trigger_id == "rr-drift"
    assert lineage.parent_version == 1
    assert lineage.event_time_from is not None
    assert lineage.event_time_from >= stream.time_of(onset)
    metrics = stored.version.metrics
    # Both compared on the same held-out slice: the new concept's.
    assert metrics["champion_holdout_examples"] == metrics["eval_examples"]
    assert metrics["accuracy"] > 0.95 > 0.8 > metrics["champion_holdout_accuracy"]
    assert metrics["examples"] + metrics["eval_examples"] == attempt.window
    # Served once: the same request again is a duplicate, in this process and the next.
    again = await core.attempt_retrain(request, stream.replay)
    assert again.status is RetrainStatus.DUPLICATE
    restarted, _ = _core(spec, loans, sink)
    assert (await restarted.attempt_retrain(request, stream.replay)).status is (
        RetrainStatus.DUPLICATE
    )
    # From now on arrivals are scored by the promoted model.
    learner = core.learner
    assert isinstance(learner, BatchLearner) and learner.runtime is not None
    assert learner.runtime.model is stored.model or type(learner.runtime.model) is type(
        stored.model
    )


async def test_the_champion_of_another_framework_is_compared_through_its_runtime(
    spec: ModelSpec,
    loans: FeatureSetSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    # The champion is a River model registered under the batch model's name.
    river_spec = load_model_spec(ROOT / "examples" / "models" / "loans.yaml")
    river = river_spec.build_pipeline()
    for x, y in synth.Agrawal(classification_function=2, seed=8).take(3000):
        river.learn_one(river_spec.select(x), y)
    sink = InMemorySink()
    v = await sink.register(spec.name, river, NewVersion(
        metrics={}, lineage=_lineage(), spec=river_spec.model_dump(mode="json"),
        idempotency_key="k", actor="t", framework="river",
    ))  # fmt: skip
    await sink.set_alias(spec.name, "champion", v.version, actor="t", reason="", trigger_id="")
    core, holder = _core(spec, loans, sink)
    stream = holder["stream"] = Stream(core, make_vector, make_label)
    await core.warm_up()  # the River champion scores arrivals until the first fit
    stream.feed(2000, function=2, seed=3)
    learner = core.learner
    assert isinstance(learner, BatchLearner)
    assert learner.metric.cm.total_weight == len(stream.joined) and learner.prequential > 0.9
    champion = await core._champion()
    assert champion is not None and champion.runtime is not None
    assert champion.runtime.framework == "river"
    outcome = await core.snapshot()
    assert outcome is not None
    metrics = sink.versions[spec.name][1].version.metrics
    # The River champion's figure through its runtime is River's own evaluate() figure.
    fit = fit_window(spec, stream.joined[-len(stream.joined) :], FEATURES_ORDER)
    direct = evaluate(river, _as_river(fit.holdout, river_spec), spec, ["Accuracy"])
    assert metrics["champion_holdout_accuracy"] == pytest.approx(direct["accuracy"])
    assert metrics["champion_holdout_examples"] == direct["eval_examples"] > 0


def _as_river(examples: list[EvalExample], spec: ModelSpec) -> list[EvalExample]:
    return [EvalExample(spec.select(e.x), e.y, e.event_time, e.prediction) for e in examples]


def _lineage() -> Any:
    from driftline.contracts.messages import Lineage

    return Lineage(featureset="loans", featureset_version=1)


# -- what the estimator is fed --------------------------------------------------------------


def test_an_estimator_that_cannot_take_nan_is_refused_with_the_fix_and_an_imputer_takes_it(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    rows = []
    for i, (x, y) in enumerate(synth.Agrawal(classification_function=2, seed=1).take(600)):
        if i % 5 == 0:
            x = {**x, "salary": None}  # missing in the log
        v, lab = make_vector(i, values=x), make_label(i, y=y)
        rows.append(JoinedExample(v, lab, Prediction(), None, None))
    plain = spec.model_copy(update={"pipeline": ["sklearn.linear_model.LogisticRegression"]})
    with pytest.raises(FailedPreconditionError, match=r"LogisticRegression refused .*NaN"):
        fit_window(plain, rows, FEATURES_ORDER)
    imputed = spec.model_copy(
        update={
            "pipeline": [
                {"sklearn.impute.SimpleImputer": {"strategy": "median"}},
                "sklearn.preprocessing.StandardScaler",
                "sklearn.linear_model.LogisticRegression",
            ]
        }
    )
    fit = fit_window(imputed, rows, FEATURES_ORDER)
    assert fit.trained_on == 600 - len(fit.holdout)
    assert "salary" not in fit.trained_x[0]  # event 0: missing, not zero


def test_rows_with_a_value_that_is_not_a_number_are_left_out_of_the_fit(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    rows = []
    for i, (x, y) in enumerate(synth.Agrawal(classification_function=2, seed=1).take(1000)):
        if i in (3, 7):
            x = {**x, "car": "a string"}
        rows.append(JoinedExample(make_vector(i, values=x), make_label(i, y=y), Prediction(),
                                  None, None))  # fmt: skip
    fit = fit_window(spec, rows, FEATURES_ORDER)
    assert fit.skipped == 2
    assert fit.trained_on == len(rows) - len(fit.holdout) - 2
    assert fit.lineage.examples == fit.trained_on


def test_a_window_of_one_class_is_refused_naming_the_model(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    rows = [
        JoinedExample(make_vector(i, values=x), make_label(i, y=1), Prediction(), None, None)
        for i, (x, _) in enumerate(synth.Agrawal(seed=1).take(200))
    ]
    with pytest.raises(FailedPreconditionError, match=r"model loans-gbm: .* all have label 1"):
        fit_window(spec, rows, FEATURES_ORDER)


def test_library_versions_name_what_the_pipeline_is_made_of(spec: ModelSpec) -> None:
    versions = library_versions(spec.build_pipeline())
    assert versions["lightgbm"] == version("lightgbm")
    assert versions["scikit-learn"] == version("scikit-learn")
    hgb = spec.model_copy(update={"pipeline": ["sklearn.ensemble.HistGradientBoostingClassifier"]})
    assert set(library_versions(hgb.build_pipeline())) == {"numpy", "scikit-learn"}


def test_any_runtime_scores_like_rivers_evaluate(spec: ModelSpec, loans: FeatureSetSpec) -> None:
    river_spec = load_model_spec(ROOT / "examples" / "models" / "loans.yaml")
    river = river_spec.build_pipeline()
    data = list(synth.Agrawal(classification_function=2, seed=2).take(1500))
    for x, y in data[:1000]:
        river.learn_one(x, y)
    held = [EvalExample(x, y, utcnow(), Prediction()) for x, y in data[1000:]]
    from driftline.model_runtimes.river_runtime import RiverRuntime

    runtime = RiverRuntime(river, signature_of(FEATURES_ORDER, "binary", loans))
    names = ["Accuracy", "LogLoss", "ROCAUC"]
    ours = evaluate_runtime(runtime, held, river_spec, names)
    assert ours == pytest.approx(evaluate(river, held, river_spec, names))


# -- models training cannot retrain ------------------------------------------------------------


def test_a_spec_without_a_trainer_gets_no_core_and_a_reason(spec: ModelSpec) -> None:
    onnx = ModelSpec.model_validate(
        {"name": "loans-onnx", "featureset": "loans", "task": "binary", "framework": "onnx",
         "classes": [0, 1], "features": FEATURES_ORDER}
    )  # fmt: skip
    reasons = unservable_reasons({"loans-onnx": onnx, spec.name: spec})
    assert list(reasons) == ["loans-onnx"]
    assert "onnx model without a trainer" in reasons["loans-onnx"]
    with pytest.raises(ValueError, match="loans-onnx \\(onnx\\) has no pipeline"):
        TrainingCore(onnx, InMemorySink())


class _Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value, self.headers = offset, value, ()


class _Consumer:
    def __init__(self, records: list[_Record]) -> None:
        from aiokafka import TopicPartition

        self.tp = TopicPartition(RETRAIN.name, 0)
        self.records = records
        self.commits: list[int] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[_Record]]:
        batch, self.records = self.records, []
        if not batch:
            await asyncio.sleep(0.01)
            return {}
        return {self.tp: batch}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.extend(offsets.values())


class _Registry(InMemorySink):
    """Records unserved requests; fails the way it is told to first."""

    def __init__(self, failures: list[Exception]) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def record_unserved_retrain(self, name: str, request_id: str, **kw: Any) -> int:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return await super().record_unserved_retrain(name, request_id, **kw)


def _request(rid: str, model: str) -> bytes:
    return RetrainRequest(
        request_id=rid, model_name=model, reason="drift", requested_at=utcnow(),
        drift_ids=["d-9"],
    ).model_dump_json().encode()  # fmt: skip


async def test_retrain_requests_training_cannot_serve_are_recorded_on_the_model_then_committed(
    spec: ModelSpec, loans: FeatureSetSpec
) -> None:
    registry = _Registry([UnavailableError("registry down")])
    core = TrainingCore(spec, registry, featureset=loans)
    metrics = ServiceMetrics("training")
    health = ConsumerHealth(metrics.registry, stall_after_s=60)
    loop = KafkaRetrainLoop(
        [core], PlatformSettings(), metrics, lambda plan: asyncio.sleep(0, []), health,
        unserved=registry, unservable={"loans-onnx": "loans-onnx is an onnx model without a "
                                                    "trainer"},
    )  # fmt: skip
    consumer = _Consumer([_Record(0, _request("rr-onnx", "loans-onnx")),
                          _Record(1, _request("rr-typo", "laons"))])  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(loop.consume(consumer, stop))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(60):
            while not (consumer.commits and consumer.commits[-1] == 2):
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
    # The unreachable registry was retried (held, not dropped), then both were recorded.
    assert registry.calls == 3
    assert registry.unserved["loans-onnx"] == {"rr-onnx": "loans-onnx is an onnx model without a "
                                                          "trainer"}  # fmt: skip
    [reason] = registry.unserved["laons"].values()
    assert "training has no model spec named 'laons'" in reason and spec.name in reason
    assert health.skipped(RETRAIN.name, "unknown_model") == 0
    sample = metrics.registry.get_sample_value(
        "driftline_training_retrain_unserved_total", {"model": "loans-onnx"}
    )
    assert sample == 1.0
    assert core.retrains.handled == 0


async def test_a_registry_that_refuses_the_record_gets_the_request_skipped_not_held(
    spec: ModelSpec, loans: FeatureSetSpec
) -> None:
    # What a registry without the RPC answers (UNIMPLEMENTED): final, not retried.
    registry = _Registry([DriftlineError("registry failed (UNIMPLEMENTED): not implemented")])
    core = TrainingCore(spec, registry, featureset=loans)
    metrics = ServiceMetrics("training")
    health = ConsumerHealth(metrics.registry, stall_after_s=60)
    loop = KafkaRetrainLoop(
        [core], PlatformSettings(), metrics, lambda plan: asyncio.sleep(0, []), health,
        unserved=registry,
    )  # fmt: skip
    consumer = _Consumer([_Record(0, _request("rr-x", "elsewhere"))])
    stop = asyncio.Event()
    task = asyncio.create_task(loop.consume(consumer, stop))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(60):
            while not (consumer.commits and consumer.commits[-1] == 1):
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
    assert registry.calls == 1 and registry.unserved == {}
    assert health.skipped(RETRAIN.name, "unserved_unrecorded") == 1
    assert loop.held == []


def test_a_duration_window_is_replayed_from_the_newest_event_minus_the_window(
    spec: ModelSpec,
) -> None:
    from driftline.training.retrain import schedule_plan

    timed = spec.model_copy(update={"retraining": spec.retraining.model_copy(
        update={"window": "2h"})})  # fmt: skip
    newest = utcnow()
    plan = schedule_plan(timed, newest)
    assert plan.since_event_time == newest - timedelta(hours=2)
    assert plan.keep_seconds == 7200 and plan.tail_records is None
    counted = schedule_plan(spec, newest)
    assert counted.since_event_time is None and counted.tail_records == 20000
