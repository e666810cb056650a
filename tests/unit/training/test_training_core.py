"""The training core: River-equivalent prequential accuracy, snapshots, retraining."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from river import evaluate, stream
from river.datasets import synth

from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel
from driftline.drift_stats import Reference
from driftline.specs import ModelSpec, load_model_spec
from driftline.training.candidates import InMemorySink
from driftline.training.core import CoreConfig, TrainingCore
from driftline.training.label_join import JoinedExample, Position
from driftline.training.learner import Prediction
from driftline.training.retrain import ReplayPlan, select_window

ROOT = Path(__file__).resolve().parents[3]
N, DELAY = 3000, 50


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_model_spec(ROOT / "examples" / "models" / "loans.yaml")


def _agrawal_qa(seed: int, n: int, delay: int) -> Any:
    return stream.simulate_qa(synth.Agrawal(seed=seed).take(n), None, delay)


def _feed(
    core: TrainingCore,
    qa: Any,
    vector: Callable[..., FeatureVector],
    label: Callable[..., ValidLabel],
) -> None:
    for i, x, y in qa:
        if y is None:
            core.on_vector(vector(i, values=x), Position("f", i % 3, i))
        else:
            core.on_label(label(i, y=y), Position("l", i % 3, i))


def test_prequential_accuracy_matches_river_progressive_val_score(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    reference = evaluate.progressive_val_score(
        synth.Agrawal(seed=11).take(N), spec.build_pipeline(), spec.build_metric(), delay=DELAY
    ).get()
    core = TrainingCore(
        spec, InMemorySink(), CoreConfig(snapshot_every=10**9, allowed_lateness_s=10 * DELAY)
    )
    _feed(core, _agrawal_qa(11, N, DELAY), make_vector, make_label)
    assert core.learner.learned == N
    assert abs(core.learner.prequential - reference) < 0.01
    assert core.learner.prequential > 0.9  # a tree on Agrawal, not a coin


async def test_snapshots_register_candidates_and_promote_the_first(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    sink = InMemorySink()
    core = TrainingCore(spec, sink, CoreConfig(snapshot_every=1000, eval_window=600))
    outcomes = []
    for i, x, y in _agrawal_qa(5, 2500, 10):
        if y is None:
            core.on_vector(make_vector(i, values=x), Position("driftline.features", 0, i))
        else:
            core.on_label(make_label(i, y=y), Position("driftline.labels.valid", 1, i))
        if core.snapshot_due:
            outcomes.append(await core.snapshot())
    assert [o.version.version for o in outcomes] == [1, 2]
    first, second = outcomes
    assert first.alias == "champion"  # first model, min_examples (1000) seen
    assert sink.aliases["loans"]["champion"] in (1, 2)
    lineage = second.version.lineage
    assert lineage is not None
    assert lineage.examples == 2000 and lineage.parent_version == 1
    assert lineage.featureset == "loans" and lineage.featureset_version == 1
    assert {(r.topic, r.partition) for r in lineage.offsets} == {
        ("driftline.features", 0), ("driftline.labels.valid", 1)
    }  # fmt: skip
    assert lineage.trigger_id and lineage.trigger_id.startswith("schedule:loans:2000")
    assert second.version.metrics["examples"] == 2000
    assert 0.5 < second.version.metrics["accuracy"] <= 1.0
    assert "champion_holdout_accuracy" in second.version.metrics
    # Each version records the distribution of its recent training examples.
    recorded = sink.versions["loans"][1].spec
    assert recorded["name"] == "loans"
    reference = Reference.from_dict(recorded["reference"])
    assert reference.count == 600  # the eval window the online model fits now
    assert set(reference.numeric) >= {"salary", "age", "loan"}
    assert sum(reference.numeric["salary"].counts) == 600


async def test_retrain_registers_one_fresh_candidate_per_request(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    examples = [
        JoinedExample(
            make_vector(i, values=x),
            make_label(i, y=y),
            Prediction(),
            Position("driftline.features", 0, i),
            None,
        )
        for i, (x, y) in enumerate(synth.Agrawal(seed=2).take(3000))
    ]
    plans: list[ReplayPlan] = []

    async def replay(plan: ReplayPlan) -> list[JoinedExample[Any]]:
        plans.append(plan)
        return list(reversed(examples))  # arrival order does not matter

    sink = InMemorySink()
    core = TrainingCore(spec, sink)
    request = RetrainRequest(
        request_id="rr-1", model_name="loans", reason="drift",
        since_event_time=examples[500].event_time, requested_at=examples[-1].event_time,
    )  # fmt: skip
    outcome = await core.retrain(request, replay)
    assert outcome is not None and outcome.version.version == 1
    lineage = outcome.version.lineage
    assert lineage is not None and lineage.trigger_id == "rr-1"
    held = outcome.version.metrics["eval_examples"]
    assert held == 500  # 20% of the 2500 examples since the request's time
    assert lineage.examples == 2000
    assert lineage.event_time_from == examples[500].event_time
    assert lineage.event_time_to == examples[2499].event_time
    assert outcome.version.metrics["accuracy"] > 0.8
    assert outcome.alias == "champion"
    # The reference is built from exactly the 2000 examples it trained on.
    reference = Reference.from_dict(sink.versions["loans"][0].spec["reference"])
    assert reference.count == 2000
    trained = [x for x, _ in synth.Agrawal(seed=2).take(3000)][500:2500]
    ages = sorted(float(x["age"]) for x in trained)
    assert sum(reference.numeric["age"].counts) == 2000
    assert reference.numeric["age"].edges[0] >= ages[0]
    assert reference.numeric["age"].edges[-1] <= ages[-1]

    # The same request again — in this process, or in a new one — adds nothing.
    assert await core.retrain(request, replay) is None
    fresh_process = TrainingCore(spec, sink)
    assert await fresh_process.retrain(request, replay) is None
    assert len(sink.versions["loans"]) == 1
    assert len(plans) == 1
    assert plans[0].since_event_time == examples[500].event_time
    # A different request makes a second candidate, compared with the champion.
    second = await core.retrain(request.model_copy(update={"request_id": "rr-2"}), replay)
    assert second is not None and second.version.version == 2
    assert second.version.lineage is not None and second.version.lineage.parent_version == 1
    assert "champion_holdout_accuracy" in second.version.metrics


def test_vectors_of_other_featuresets_are_ignored(
    spec: ModelSpec, make_vector: Callable[..., FeatureVector]
) -> None:
    core = TrainingCore(spec, InMemorySink())
    core.on_vector(make_vector(1, featureset="other"))
    assert core.other_featuresets == 1 and core.join.pending == 0


def test_window_of_examples_keeps_the_newest_by_event_time(
    make_vector: Callable[..., FeatureVector], make_label: Callable[..., ValidLabel]
) -> None:
    examples = [
        JoinedExample(make_vector(i), make_label(i), Prediction(), None, None) for i in (5, 1, 9, 3)
    ]
    plan = ReplayPlan(None, {}, 10, keep_examples=2, keep_seconds=None)
    assert [e.event_id for e in select_window(examples, plan)] == ["e5", "e9"]
    by_time = ReplayPlan(None, {}, None, keep_examples=None, keep_seconds=4)
    assert [e.event_id for e in select_window(examples, by_time)] == ["e5", "e9"]


async def test_a_snapshot_is_not_judged_on_predictions_made_before_it_learned_anything(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    """A standby taking over reads its backlog's vectors before any label: the empty
    model's predictions are no evidence, so the first snapshot has no evaluation window
    to be judged on (it was registered with "accuracy 0.0000" on 600 of them)."""
    sink = InMemorySink()
    config = CoreConfig(snapshot_every=1000, eval_window=600)
    active = TrainingCore(spec, sink, config)
    rows = list(synth.Agrawal(seed=4).take(4000))
    for i, (x, y) in enumerate(rows[:1200]):
        active.on_vector(make_vector(i, values=x), Position("driftline.features", 0, i))
        active.on_label(make_label(i, y=y), Position("driftline.labels.valid", 0, i))
    champion = await active.snapshot()
    assert champion is not None and champion.alias == "champion"

    standby = TrainingCore(spec, sink, config)
    backlog = range(1200, 2400)
    for i in backlog:
        standby.on_vector(make_vector(i, values=rows[i][0]), Position("driftline.features", 0, i))
    for i in backlog:
        standby.on_label(make_label(i, y=rows[i][1]), Position("driftline.labels.valid", 0, i))
    assert standby.snapshot_due
    first = await standby.snapshot()
    assert first is not None and first.alias == "challenger"
    assert first.version.metrics["holdout_examples"] == 0
    assert "the evaluation window has 0 examples" in first.decision.reason

    # Once it predicts with what it learned, its predictions are judged again.
    for i in range(2400, 3600):
        standby.on_vector(make_vector(i, values=rows[i][0]), Position("driftline.features", 0, i))
        standby.on_label(make_label(i, y=rows[i][1]), Position("driftline.labels.valid", 0, i))
    second = await standby.snapshot()
    assert second is not None
    assert second.version.metrics["holdout_examples"] == 600
    assert second.version.metrics["holdout_accuracy"] > 0.8
