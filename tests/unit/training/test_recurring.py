"""Recurring concepts: a concept-drift retrain request scores the earlier champions on the
first labelled examples after the onset and restores one whose concept came back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from river.datasets import synth

from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel
from driftline.registry_api.promotion import PromotionPolicy
from driftline.specs import ModelSpec, load_model_spec
from driftline.training.candidates import InMemorySink
from driftline.training.core import CoreConfig, PendingRetrain, RetrainStatus, TrainingCore
from driftline.training.label_join import JoinedExample, Position
from driftline.training.learner import Prediction
from driftline.training.recurring import (
    RESTORE_REASON,
    ChampionChange,
    RecurringConfig,
    choose_restore,
    earlier_champions,
    is_concept_drift,
    restored_for,
)
from driftline.training.retrain import ReplayPlan
from driftline.training.training_metrics import TrainingCollector

ROOT = Path(__file__).resolve().parents[3]
DELAY = 10
ACC = PromotionPolicy(metric="accuracy", min_improvement=0.005, min_eval_examples=200)


def _scores(acc: float, n: int = 200) -> dict[str, float]:
    return {"accuracy": acc, "eval_examples": float(n)}


# -- the decision, alone ------------------------------------------------------------------


def test_the_best_earlier_champion_is_restored_when_it_wins_by_the_margin_and_is_good() -> None:
    choice = choose_restore(
        {1: _scores(0.96), 2: _scores(0.97), 4: _scores(0.50)},
        _scores(0.64),
        champion=5,
        policy=ACC,
        min_score=0.8,
    )
    assert choice.version == 2
    assert choice.reason.startswith(f"{RESTORE_REASON}: v2 accuracy 0.9700 vs champion v5 0.6400")


@pytest.mark.parametrize(
    ("earlier", "champion", "why"),
    [
        (0.642, 0.64, "below the margin"),  # within the promotion margin: not a win
        (0.75, 0.55, "short of the 0.8"),  # less bad than a drifted champion: retrain instead
        (0.60, 0.90, "below the margin"),  # the champion is fine
    ],
)
def test_no_restore_when_the_earlier_champion_does_not_win_or_is_not_good(
    earlier: float, champion: float, why: str
) -> None:
    choice = choose_restore(
        {1: _scores(earlier)}, _scores(champion), champion=2, policy=ACC, min_score=0.8
    )
    assert choice.version is None
    assert why in choice.reason


def test_too_few_examples_after_the_onset_restore_nothing() -> None:
    choice = choose_restore(
        {1: _scores(0.97, n=120)}, _scores(0.6, n=120), champion=2, policy=ACC, min_score=0.8
    )
    assert choice.version is None and "too small" in choice.reason


def test_a_lower_is_better_metric_restores_the_lowest_under_its_ceiling() -> None:
    policy = PromotionPolicy(metric="logloss", min_improvement=0.02, min_eval_examples=10)
    scores = {
        1: {"logloss": 0.20, "eval_examples": 50.0},
        2: {"logloss": 0.35, "eval_examples": 50},
    }
    champ = {"logloss": 0.7, "eval_examples": 50.0}
    assert choose_restore(scores, champ, champion=3, policy=policy, min_score=0.3).version == 1
    assert choose_restore(scores, champ, champion=3, policy=policy, min_score=0.1).version is None


def test_earlier_champions_are_the_most_recent_distinct_ones_without_the_current() -> None:
    changes = [ChampionChange(v) for v in (1, 2, 1, 3)] + [ChampionChange(None), ChampionChange(5)]
    assert earlier_champions(changes, current=5, limit=3) == [3, 1, 2]
    assert earlier_champions(changes, current=5, limit=1) == [3]
    assert earlier_champions([ChampionChange(1)], current=1, limit=3) == []


def test_a_restoration_for_a_request_is_found_in_the_alias_history() -> None:
    changes = [
        ChampionChange(1, "no champion yet", "schedule:x"),
        ChampionChange(3, "accuracy 0.9 vs 0.6", "rr-1"),
        ChampionChange(1, f"{RESTORE_REASON}: v1 …", "rr-2"),
    ]
    assert restored_for(changes, "rr-2") == 1
    assert restored_for(changes, "rr-1") is None  # a retrained candidate, not a restoration


def _request(rid: str, reason: str, since: datetime | None) -> RetrainRequest:
    return RetrainRequest(
        request_id=rid, model_name="loans", reason=reason, since_event_time=since,
        requested_at=datetime(2026, 1, 2, tzinfo=UTC),
    )  # fmt: skip


def test_only_concept_drift_requests_with_an_onset_look_for_a_recurring_concept() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert is_concept_drift(_request("a", "concept drift (error_rise: 20 > 14)", at))
    assert not is_concept_drift(_request("b", "data drift (psi on age: 0.4 > 0.2)", at))
    assert not is_concept_drift(_request("c", "concept drift (error_rise: 20 > 14)", None))


def test_a_waiting_request_is_rechecked_once_the_recurring_window_may_be_there() -> None:
    pending = PendingRetrain(_request("a", "concept drift", None), 50, 1500, recurring_at=200)
    pending.arrived = 149
    assert not pending.recheck_due
    pending.arrived = 150
    assert pending.recheck_due
    pending.recurring_at = None  # checked: now only the candidate's window counts
    assert not pending.recheck_due


# -- the core, on Agrawal 0 -> 2 -> 0 ------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_model_spec(ROOT / "examples" / "models" / "loans.yaml")


class Stream:
    """Agrawal examples fed to a core in arrival order (labels ``DELAY`` events late),
    remembering what was joined so that a replay of the logs can return it."""

    def __init__(
        self,
        core: TrainingCore,
        vector: Callable[..., FeatureVector],
        label: Callable[..., ValidLabel],
    ) -> None:
        self.core, self.vector, self.label = core, vector, label
        self.sent = 0
        self.joined: list[JoinedExample[Any]] = []
        self._waiting: list[tuple[FeatureVector, Any]] = []

    def feed(self, n: int, function: int) -> None:
        for x, y in synth.Agrawal(classification_function=function, seed=self.sent).take(n):
            v = self.vector(self.sent, values=x)
            self.core.on_vector(v, Position("driftline.features", 0, self.sent))
            self._waiting.append((v, y))
            self.sent += 1
            while len(self._waiting) > DELAY:
                v, y = self._waiting.pop(0)
                lab = self.label(int(v.event_id[1:]), y=y)
                self.core.on_label(lab, Position("driftline.labels.valid", 0, self.sent))
                self.joined.append(JoinedExample(v, lab, Prediction(), None, None))

    async def replay(self, plan: ReplayPlan) -> list[JoinedExample[Any]]:
        return list(self.joined)

    def request(self, rid: str) -> RetrainRequest:
        """The monitor's request for a concept drift whose onset is the next event."""
        at = self.vector(self.sent).event_time
        return RetrainRequest(
            request_id=rid, model_name="loans", reason="concept drift (error_rise: 30 > 14)",
            since_event_time=at, requested_at=at,
        )  # fmt: skip


async def test_the_returning_concept_gets_its_earlier_champion_back_before_a_retrain(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    sink = InMemorySink()
    config = CoreConfig(snapshot_every=1000, eval_window=600, recurring=RecurringConfig())
    core = TrainingCore(spec, sink, config)
    stream = Stream(core, make_vector, make_label)

    # Concept 0: a scheduled snapshot becomes the first champion.
    stream.feed(1100, function=0)
    assert (await core.snapshot()).alias == "champion"
    first = sink.aliases["loans"]["champion"]

    # Concept 2: nothing earlier fits it, so the request waits for its fresh candidate.
    drift = stream.request("rr-to-2")
    now = drift.requested_at + timedelta(seconds=1)  # young requests: they wait
    stream.feed(300, function=2)
    waiting = await core.attempt_retrain(drift, stream.replay, now=now)
    assert waiting.status is RetrainStatus.WAITING and waiting.restored is None
    assert core.recurring_checks["none"] == 1  # v1 is the champion: no earlier one
    while waiting.status is RetrainStatus.WAITING:
        stream.feed(200, function=2)
        waiting = await core.attempt_retrain(drift, stream.replay, now=now)
    assert waiting.outcome is not None and waiting.outcome.alias == "champion"
    second = sink.aliases["loans"]["champion"]
    assert second != first

    # Concept 0 again: 90 labelled examples are not enough to judge ...
    back = stream.request("rr-back-to-0")
    now = back.requested_at + timedelta(seconds=1)
    stream.feed(100, function=0)
    early = await core.attempt_retrain(back, stream.replay, now=now)
    assert early.status is RetrainStatus.WAITING and early.restored is None
    assert not core.retrain_recheck_due("rr-back-to-0")
    # ... 200 are, long before the 1,500 a candidate needs: the first champion is back.
    stream.feed(110, function=0)
    assert core.retrain_recheck_due("rr-back-to-0")
    restoring = await core.attempt_retrain(back, stream.replay, now=now)
    assert restoring.status is RetrainStatus.WAITING  # the retraining still comes
    assert restoring.restored is not None
    assert restoring.restored.version.version == first
    assert sink.aliases["loans"]["champion"] == first
    model, alias, version, reason = sink.alias_log[-1]
    assert model == "loans"
    assert (alias, version) == ("champion", first)
    assert reason.startswith(f"{RESTORE_REASON}: v{first} accuracy 0.9")
    assert f"vs champion v{second}" in reason
    assert sink.alias_triggers[-1] == "rr-back-to-0"
    assert core.recurring_checks["restored"] == 1 and len(core.restored) == 1
    assert not core.retrain_recheck_due("rr-back-to-0")  # checked: waits for the window now

    # Checked once per request: a later attempt does not score the earlier champions again.
    moves = len(sink.alias_log)
    stream.feed(100, function=0)
    again = await core.attempt_retrain(back, stream.replay, now=now)
    assert again.restored is None and len(sink.alias_log) == moves

    # The fresh candidate still competes, against the restored champion.
    while again.status is RetrainStatus.WAITING:
        stream.feed(200, function=0)
        again = await core.attempt_retrain(back, stream.replay, now=now)
    assert again.status is RetrainStatus.REGISTERED and again.outcome is not None
    assert again.outcome.version.lineage is not None
    assert again.outcome.version.lineage.parent_version == first
    assert "champion_holdout_accuracy" in again.outcome.version.metrics

    registry = CollectorRegistry()
    registry.register(TrainingCollector([core]))
    assert registry.get_sample_value("driftline_training_restores_total", {"model": "loans"}) == 1
    assert (
        registry.get_sample_value(
            "driftline_training_recurring_checks_total", {"model": "loans", "outcome": "restored"}
        )
        == 1
    )


async def test_the_restoration_is_traced_in_the_retrain_requests_trace(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop's trace: the request's span → ``recurring loans`` → ``promote loans``
    (whose SetAlias call carries it on to the registry and serving's swap)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from driftline.training import core as core_module

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr(core_module, "tracer", tracer)
    sink = InMemorySink()
    core = TrainingCore(spec, sink, CoreConfig(snapshot_every=1000))
    stream = Stream(core, make_vector, make_label)
    await _concept_2_after_concept_0(core, stream, sink)
    back = stream.request("rr-traced")
    stream.feed(260, function=0)
    with tracer.start_as_current_span("driftline.retrain process") as process:
        attempt = await core.attempt_retrain(
            back, stream.replay, now=back.requested_at + timedelta(seconds=1)
        )
    assert attempt.restored is not None
    spans = {s.name: s for s in exporter.get_finished_spans()}
    recurring, promote = spans["recurring loans"], spans["promote loans"]
    assert recurring.parent is not None
    assert recurring.parent.span_id == process.get_span_context().span_id
    assert promote.parent is not None and promote.parent.span_id == recurring.context.span_id
    assert recurring.attributes is not None and promote.attributes is not None
    assert recurring.attributes["driftline.retrain.id"] == "rr-traced"
    assert recurring.attributes["driftline.recurring.outcome"] == "restored"
    assert promote.attributes["driftline.model.version"] == 1
    assert promote.attributes["driftline.trigger.id"] == "rr-traced"
    assert str(promote.attributes["driftline.promotion.reason"]).startswith(RESTORE_REASON)


async def _concept_2_after_concept_0(
    core: TrainingCore, stream: Stream, sink: InMemorySink
) -> None:
    """v1 learned concept 0 and was champion; v2 (concept 2) is champion now."""
    stream.feed(1100, function=0)
    await core.snapshot()
    stream.feed(1000, function=2)
    await core.snapshot()  # promoted or not: v1 is an earlier or the current champion
    sink.aliases["loans"]["champion"] = 2
    sink.alias_log.append(("loans", "champion", 2, "test: concept 2 champion"))
    sink.alias_triggers.append("")


async def test_a_restoration_is_not_repeated_after_a_restart(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    """A request read again by a new process finds its restoration in the alias history."""
    sink = InMemorySink()
    core = TrainingCore(spec, sink, CoreConfig(snapshot_every=1000))
    stream = Stream(core, make_vector, make_label)
    await _concept_2_after_concept_0(core, stream, sink)
    v1 = 1
    back = stream.request("rr-back")
    stream.feed(260, function=0)
    now = back.requested_at + timedelta(seconds=1)
    assert (await core.attempt_retrain(back, stream.replay, now=now)).restored is not None
    assert sink.aliases["loans"]["champion"] == v1

    restarted = TrainingCore(spec, sink, CoreConfig(snapshot_every=1000))
    sink.aliases["loans"]["champion"] = 2  # a person moved it back meanwhile
    again = await restarted.attempt_retrain(back, stream.replay, now=now)
    assert again.restored is None and sink.aliases["loans"]["champion"] == 2
    assert restarted.recurring_checks["kept"] == 1


async def test_no_check_when_disabled_or_not_a_concept_drift(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    sink = InMemorySink()
    off = CoreConfig(snapshot_every=1000, recurring=RecurringConfig(enabled=False))
    core = TrainingCore(spec, sink, off)
    stream = Stream(core, make_vector, make_label)
    stream.feed(1100, function=0)
    await core.snapshot()
    request = stream.request("rr-off")
    stream.feed(300, function=2)
    now = request.requested_at + timedelta(seconds=1)
    attempt = await core.attempt_retrain(request, stream.replay, now=now)
    assert attempt.status is RetrainStatus.WAITING
    assert not core.recurring_checks and core.pending_retrains["rr-off"].recurring_at is None
