"""A retrain request that comes before the data: it waits, holds snapshot promotion, and is
served once enough labelled examples after its ``since`` have been joined."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from river.datasets import synth

from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel
from driftline.specs import ModelSpec, load_model_spec
from driftline.training.candidates import InMemorySink
from driftline.training.core import CoreConfig, RetrainStatus, TrainingCore
from driftline.training.label_join import JoinedExample, Position
from driftline.training.learner import Prediction
from driftline.training.retrain import ReplayPlan, examples_needed

ROOT = Path(__file__).resolve().parents[3]
DELAY = 10


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

    def feed(self, n: int, function: int, seed: int) -> None:
        for x, y in synth.Agrawal(classification_function=function, seed=seed).take(n):
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
        """Everything labelled so far (the core selects the window after ``since``)."""
        return list(self.joined)

    def time_of(self, i: int) -> datetime:
        return self.vector(i).event_time


async def test_a_request_waits_for_labels_after_its_onset_and_holds_snapshot_promotion(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    sink = InMemorySink()
    core = TrainingCore(spec, sink, CoreConfig(snapshot_every=1000, eval_window=600))
    stream = Stream(core, make_vector, make_label)
    replays: list[ReplayPlan] = []

    async def replay(plan: ReplayPlan) -> list[JoinedExample[Any]]:
        replays.append(plan)
        return await stream.replay(plan)

    async def snapshot_if_due() -> None:
        if core.snapshot_due:
            await core.snapshot()

    # The first concept: snapshots make a champion.
    for _ in range(2):
        stream.feed(1000, function=0, seed=1 + stream.sent)
        await snapshot_if_due()
    champion = sink.aliases["loans"]["champion"]
    registered = len(sink.versions["loans"])

    # The concept drifts; the monitor asks for retraining from the onset at once.
    onset = stream.sent
    request = RetrainRequest(
        request_id="rr-early", model_name="loans", reason="concept drift",
        since_event_time=stream.time_of(onset), requested_at=stream.time_of(onset + 300),
    )  # fmt: skip
    stream.feed(300, function=2, seed=77)
    now = request.requested_at + timedelta(seconds=1)
    first = await core.attempt_retrain(request, replay, now=now)
    assert first.status is RetrainStatus.WAITING and not first.done
    assert first.needed == examples_needed(spec) == 1500
    assert first.window == 300 - DELAY  # the labelled examples after the onset so far
    assert "rr-early" in core.pending_retrains
    assert core.retrains.deferred == 1 and core.retrains.skipped == 0
    assert len(sink.versions["loans"]) == registered  # no candidate yet
    assert not core.retrain_recheck_due("rr-early")

    # A scheduled snapshot during the wait is registered but not promoted.
    stream.feed(1000, function=2, seed=78)
    while not core.snapshot_due:
        stream.feed(10, function=2, seed=stream.sent)
    held = await core.snapshot()
    assert held.alias == "challenger"
    assert "rr-early" in held.decision.reason and "pending" in held.decision.reason
    assert sink.aliases["loans"]["champion"] == champion
    assert not core.retrain_recheck_due("rr-early")

    # Once enough labelled examples after the onset were learned, it is served.
    while not core.retrain_recheck_due("rr-early"):
        stream.feed(10, function=2, seed=stream.sent)
    served = await core.attempt_retrain(request, replay, now=now + timedelta(seconds=30))
    assert served.status is RetrainStatus.REGISTERED and served.outcome is not None
    assert served.window >= 1500
    lineage = served.outcome.version.lineage
    assert lineage is not None and lineage.trigger_id == "rr-early"
    assert lineage.event_time_from is not None and lineage.event_time_from >= stream.time_of(onset)
    assert served.outcome.alias == "champion"  # fresh on the new concept beats the old one
    assert sink.aliases["loans"]["champion"] == served.outcome.version.version
    assert core.pending_retrains == {} and core.retrains.handled == 1
    assert all(p.since_event_time == stream.time_of(onset) for p in replays)

    # Served once: the same request again is a duplicate, not a second candidate.
    again = await core.attempt_retrain(request, replay, now=now + timedelta(seconds=60))
    assert again.status is RetrainStatus.DUPLICATE
    assert sum(1 for s in sink.versions["loans"] if s.key == "rr-early") == 1


async def test_a_request_holds_snapshot_promotion_while_its_window_is_replayed(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
) -> None:
    """A slow replay (it took 30 s once, on a busy machine) must not let the schedule
    promote the online model before the request counts as pending."""
    sink = InMemorySink()
    core = TrainingCore(spec, sink, CoreConfig(snapshot_every=1000, eval_window=600))
    stream = Stream(core, make_vector, make_label)
    for _ in range(2):
        stream.feed(1000, function=0, seed=1 + stream.sent)
        if core.snapshot_due:
            await core.snapshot()
    champion = sink.aliases["loans"]["champion"]
    onset = stream.sent
    request = RetrainRequest(
        request_id="rr-slow", model_name="loans", reason="concept drift",
        since_event_time=stream.time_of(onset), requested_at=stream.time_of(onset),
    )  # fmt: skip
    replaying, release = asyncio.Event(), asyncio.Event()

    async def slow_replay(plan: ReplayPlan) -> list[JoinedExample[Any]]:
        replaying.set()
        await release.wait()
        return await stream.replay(plan)

    attempt = asyncio.create_task(
        core.attempt_retrain(request, slow_replay, now=request.requested_at)
    )
    await replaying.wait()
    assert "rr-slow" in core.pending_retrains  # pending before its window is known
    # The new concept makes the online model better than the champion: a snapshot now
    # would be promoted, were the request not pending.
    stream.feed(1000, function=2, seed=78)
    while not core.snapshot_due:
        stream.feed(10, function=2, seed=stream.sent)
    held = await core.snapshot()
    assert held.alias == "challenger" and "rr-slow" in held.decision.reason
    assert sink.aliases["loans"]["champion"] == champion
    release.set()
    first = await attempt
    assert first.status is RetrainStatus.WAITING and core.retrains.deferred == 1

    # A replay that fails leaves nothing pending (the loop retries or drops the request).
    core2 = TrainingCore(spec, InMemorySink(), CoreConfig())

    async def broken(plan: ReplayPlan) -> list[JoinedExample[Any]]:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        await core2.attempt_retrain(request, broken, now=request.requested_at)
    assert core2.pending_retrains == {}


def _examples(
    n: int, vector: Callable[..., FeatureVector], label: Callable[..., ValidLabel]
) -> list[JoinedExample[Any]]:
    return [
        JoinedExample(vector(i, values=x), label(i, y=y), Prediction(), None, None)
        for i, (x, y) in enumerate(synth.Agrawal(seed=4).take(n))
    ]


@pytest.mark.parametrize(
    ("available", "status", "versions"),
    [(600, RetrainStatus.REJECTED, 0), (1200, RetrainStatus.REGISTERED, 1)],
)
async def test_after_the_longest_wait_it_trains_on_what_there_is_or_rejects(
    spec: ModelSpec,
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
    available: int,
    status: RetrainStatus,
    versions: int,
) -> None:
    examples = _examples(available, make_vector, make_label)

    async def replay(plan: ReplayPlan) -> list[JoinedExample[Any]]:
        return list(examples)

    sink = InMemorySink()
    core = TrainingCore(spec, sink, CoreConfig(retrain_max_wait_s=600.0, retrain_min_fraction=0.5))
    request = RetrainRequest(
        request_id="rr-late", model_name="loans", reason="drift",
        since_event_time=examples[0].event_time, requested_at=examples[0].event_time,
    )  # fmt: skip
    early = request.requested_at + timedelta(seconds=599)
    assert (await core.attempt_retrain(request, replay, now=early)).status is RetrainStatus.WAITING
    assert not core.retrain_deadline_passed(request, early)
    late = request.requested_at + timedelta(seconds=600)
    assert core.retrain_deadline_passed(request, late)
    attempt = await core.attempt_retrain(request, replay, now=late)
    assert attempt.status is status and attempt.done
    assert len(sink.versions.get("loans", [])) == versions
    assert core.pending_retrains == {}
    if status is RetrainStatus.REJECTED:
        # 600 examples leave 300 to learn from after the 300 held out: under half of 1000.
        assert core.retrains.skipped == 1 and "300 to learn from" in attempt.reason
    else:
        assert attempt.outcome is not None and attempt.outcome.version.lineage is not None
        assert attempt.outcome.version.lineage.examples == 700
        assert attempt.outcome.version.lineage.trigger_id == "rr-late"
    # Either way it is done with: asking again changes nothing.
    assert (await core.attempt_retrain(request, replay, now=late)).status is (
        RetrainStatus.DUPLICATE
    )
    assert len(sink.versions.get("loans", [])) == versions
