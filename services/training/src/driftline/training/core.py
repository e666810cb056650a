"""The training core: join → learn → snapshot → register → promote, and retraining.

One :class:`TrainingCore` per model spec.  No sockets: the Kafka transport
feeds records in, the registry sits behind :class:`CandidateSink`, and the
replay of recent data for a retrain request is a function passed in.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel, utcnow
from driftline.drift_stats import build_reference
from driftline.registry_client.promotion import Decision, PromotionPolicy, decide_promotion
from driftline.specs import ModelSpec, metric_key
from driftline.training.candidates import CandidateSink, Champion, RegisteredVersion
from driftline.training.label_join import JoinedExample, LabelJoin, Position
from driftline.training.learner import (
    EvalExample,
    OnlineLearner,
    Prediction,
    evaluate,
    recent_after,
    score_recorded,
)
from driftline.training.retrain import (
    ReplayPlan,
    examples_needed,
    plan_replay,
    select_window,
    train_fresh,
)

log = logging.getLogger(__name__)

ReplayFn = Callable[[ReplayPlan], Awaitable[list[JoinedExample[Any]]]]
"""Reads the recent window from the logs and returns the joined examples."""


@dataclass(frozen=True)
class CoreConfig:
    """The knobs of a core (from :class:`driftline.settings.TrainingSettings`)."""

    snapshot_every: int = 5000
    allowed_lateness_s: float = 3600.0
    orphan_retention_s: float = 3600.0
    expired_capacity: int = 100_000
    eval_window: int = 2000
    actor: str = "driftline-training"
    reference_bins: int = 10
    """Bins per numeric feature of the reference statistics recorded with a version."""
    retrain_max_wait_s: float = 900.0
    """How long (from the request's ``requested_at``) a retrain request whose window holds
    too few examples waits for more labels before it is served with what there is."""
    retrain_min_fraction: float = 0.5
    """After the wait, a candidate is trained only if it can learn from at least this
    fraction of the spec's ``min_examples``; otherwise the request is rejected."""


@dataclass(frozen=True)
class CandidateOutcome:
    """What happened to one candidate: its version, the decision, the alias it got."""

    version: RegisteredVersion
    decision: Decision
    alias: str
    reused: bool = False
    """True when the registry already had it (a replayed retrain request)."""


class RetrainStatus(StrEnum):
    """What one attempt at a retrain request came to."""

    REGISTERED = "registered"
    """A candidate was trained, registered and (maybe) promoted."""
    WAITING = "waiting"
    """Too few labelled examples after ``since`` yet: try again as labels arrive."""
    REJECTED = "rejected"
    """The wait is over and there is still too little to learn from: no candidate."""
    DUPLICATE = "duplicate"
    """Served before (in this process or, per the registry, in an earlier one)."""
    OTHER_MODEL = "other_model"
    """The request is for another model."""


@dataclass(frozen=True)
class RetrainAttempt:
    """The result of :meth:`TrainingCore.attempt_retrain`."""

    status: RetrainStatus
    outcome: CandidateOutcome | None = None
    window: int = 0
    """Labelled examples the replayed window held (after ``since``)."""
    needed: int = 0
    """Examples the window must hold for a candidate of the spec's ``min_examples``."""
    reason: str = ""

    @property
    def done(self) -> bool:
        """False only while the request is waiting for more labelled examples."""
        return self.status is not RetrainStatus.WAITING


@dataclass
class PendingRetrain:
    """A retrain request waiting for labelled examples after its ``since``."""

    request: RetrainRequest
    window: int
    """Examples after ``since`` the last replay found."""
    needed: int
    arrived: int = 0
    """Examples learned online after ``since`` since that replay (an estimate of what a
    new replay would add: this replica may see only some partitions, or lag)."""

    @property
    def recheck_due(self) -> bool:
        """Whether enough examples have probably arrived for the window to be served."""
        return self.window + self.arrived >= self.needed

    def count(self, event_time: datetime) -> None:
        """Account for one example learned online."""
        since = self.request.since_event_time
        if since is None or event_time >= since:
            self.arrived += 1


@dataclass
class RetrainStats:
    """Counters of retrain requests."""

    handled: int = 0
    duplicates: int = 0
    skipped: int = 0
    """Rejected: still too few examples after the longest wait (logged with the reason)."""
    deferred: int = 0
    """Requests that had to wait for labelled examples (each counted once)."""
    other_models: int = 0
    seen: set[str] = field(default_factory=set)


class TrainingCore:
    """The online learner of one model, its candidates, and its retraining."""

    def __init__(
        self,
        spec: ModelSpec,
        sink: CandidateSink,
        config: CoreConfig | None = None,
    ) -> None:
        self.spec = spec
        self.sink = sink
        self.config = config or CoreConfig()
        self.join: LabelJoin[Prediction] = LabelJoin(
            allowed_lateness_s=self.config.allowed_lateness_s,
            orphan_retention_s=self.config.orphan_retention_s,
            expired_capacity=self.config.expired_capacity,
        )
        self.learner = OnlineLearner(spec, eval_window=self.config.eval_window)
        self.other_featuresets = 0
        self.candidates: list[CandidateOutcome] = []
        self.retrains = RetrainStats()
        self.last_snapshot_at = 0
        self.parent_version: int | None = None
        self._champion_cache: Champion | None = None
        self._lock = asyncio.Lock()
        self.pending_retrains: dict[str, PendingRetrain] = {}
        """Retrain requests (by id) waiting for labelled examples; while any waits, a
        scheduled snapshot is not promoted over the champion (see :meth:`snapshot`)."""

    @property
    def policy(self) -> PromotionPolicy:
        """The spec's promotion policy in :func:`decide_promotion`'s terms."""
        metric = self.spec.build_metric(self.spec.promotion.metric)
        return PromotionPolicy(
            metric=metric_key(self.spec.promotion.metric),
            min_improvement=self.spec.promotion.min_improvement,
            min_examples=self.spec.retraining.min_examples,
            min_eval_examples=self.spec.promotion.min_eval_examples,
            higher_is_better=bool(metric.bigger_is_better),
        )

    # -- the stream -------------------------------------------------------------------

    def on_vector(self, vector: FeatureVector, pos: Position | None = None) -> int:
        """Take a feature vector; returns how many examples were learned (0 or 1)."""
        if vector.featureset != self.spec.featureset:
            self.other_featuresets += 1
            return 0
        joined = self.join.add_vector(vector, pos, self.learner.observe)
        if joined is None:
            return 0
        self._learn(joined)
        return 1

    def on_label(self, label: ValidLabel, pos: Position | None = None) -> int:
        """Take a label; returns how many examples were learned (0 or 1)."""
        joined = self.join.add_label(label, pos)
        if joined is None:
            return 0
        self._learn(joined)
        return 1

    def _learn(self, joined: JoinedExample[Prediction]) -> None:
        self.learner.learn(joined)
        for pending in self.pending_retrains.values():
            pending.count(joined.event_time)

    @property
    def snapshot_due(self) -> bool:
        """True once ``snapshot_every`` examples were learned since the last snapshot and
        the model has seen the spec's minimum."""
        learned = self.learner.learned
        return (
            learned - self.last_snapshot_at >= self.config.snapshot_every
            and learned >= self.spec.retraining.min_examples
        )

    # -- candidates -------------------------------------------------------------------

    async def _champion(self) -> Champion | None:
        current = await self.sink.champion_version(self.spec.name)
        if current is None:
            return None
        cached = self._champion_cache
        if cached is not None and cached.version.version == current.version:
            return cached
        model = await self.sink.load_model(self.spec.name, current.version)
        self._champion_cache = Champion(current, model)
        return self._champion_cache

    def _compare(
        self,
        champion: Champion | None,
        candidate_scores: Callable[[list[EvalExample]], dict[str, float]],
        window: Sequence[EvalExample],
        examples: int,
    ) -> tuple[dict[str, float], dict[str, float] | None, Decision]:
        promo = self.spec.promotion.metric
        if champion is not None:
            lineage = champion.version.lineage
            # Only examples the champion has not learned from are a fair test for it.
            fair = recent_after(window, lineage.event_time_to if lineage else None)
        else:
            fair = list(window)
        cand = candidate_scores(fair)
        cand["examples"] = float(examples)
        champ = evaluate(champion.model, fair, self.spec, [promo]) if champion else None
        decision = decide_promotion(cand, champ, self.policy)
        return cand, champ, decision

    async def snapshot(self) -> CandidateOutcome:
        """Register the online model as a candidate now and apply the promotion policy."""
        async with self._lock:
            learner = self.learner
            champion = await self._champion()
            promo = self.spec.promotion.metric
            cand, champ, decision = self._compare(
                champion,
                lambda fair: score_recorded(fair, self.spec, [promo]),
                list(learner.recent),
                learner.learned,
            )
            if decision.promote and champion is not None and self.pending_retrains:
                # A retrain request answers a drift with a model of the data after
                # it; promoting the online model meanwhile would pre-empt it.
                waiting = ", ".join(sorted(self.pending_retrains))
                decision = Decision(
                    False,
                    f"{decision.reason}; but retrain request(s) {waiting} are pending for "
                    "this model, so the scheduled snapshot stays challenger",
                )
            trigger = f"schedule:{self.spec.name}:{learner.learned}:{uuid.uuid4().hex[:12]}"
            metrics = {**learner.metrics(), **_prefixed("holdout_", cand)}
            if champ is not None:
                metrics.update(_prefixed("champion_holdout_", champ))
            lineage = learner.lineage.lineage(
                parent_version=self.parent_version, trigger_id=trigger
            )
            # The online model learned from the whole stream; its recent examples
            # are the distribution it fits now, which is what live data is held to.
            reference = build_reference(
                (e.x for e in learner.recent), bins=self.config.reference_bins
            )
            version = await self.sink.register(
                self.spec.name,
                learner.model,
                metrics=metrics,
                lineage=lineage,
                spec=self._version_spec(reference),
                idempotency_key=trigger,
                actor=self.config.actor,
            )
            outcome = await self._promote(version, decision, trigger)
            self.parent_version = version.version
            self.last_snapshot_at = learner.learned
            self.candidates.append(outcome)
            return outcome

    def _version_spec(self, reference: dict[str, Any]) -> dict[str, Any]:
        """The spec recorded with a version: the model spec plus ``"reference"``, the
        statistics of the vectors it trained on (see :mod:`driftline.drift_stats`),
        which the monitor compares live windows against once it is champion."""
        return {**self.spec.model_dump(mode="json"), "reference": reference}

    async def _promote(
        self, version: RegisteredVersion, decision: Decision, trigger: str, *, reused: bool = False
    ) -> CandidateOutcome:
        alias = "champion" if decision.promote else "challenger"
        await self.sink.set_alias(
            self.spec.name,
            alias,
            version.version,
            actor=self.config.actor,
            reason=decision.reason,
            trigger_id=trigger,
        )
        log.info("%s v%d → %s: %s", self.spec.name, version.version, alias, decision.reason)
        return CandidateOutcome(version, decision, alias, reused)

    # -- retraining -------------------------------------------------------------------

    async def retrain(self, request: RetrainRequest, replay: ReplayFn) -> CandidateOutcome | None:
        """Serve a retrain request now, without waiting for more labels.

        The candidate for :meth:`attempt_retrain` with the wait already over:
        None for a duplicate, another model's request, or a rejected one.
        """
        attempt = await self.attempt_retrain(request, replay, now=None, wait=False)
        return attempt.outcome

    def retrain_recheck_due(self, request_id: str) -> bool:
        """Whether a waiting request has probably got enough examples to try again."""
        pending = self.pending_retrains.get(request_id)
        return pending is not None and pending.recheck_due

    def retrain_deadline_passed(self, request: RetrainRequest, now: datetime | None = None) -> bool:
        """Whether ``request`` has waited :attr:`CoreConfig.retrain_max_wait_s` (counted
        from its ``requested_at``, so a restart does not start the wait again)."""
        waited = ((now or utcnow()) - request.requested_at).total_seconds()
        return waited >= self.config.retrain_max_wait_s

    async def attempt_retrain(
        self,
        request: RetrainRequest,
        replay: ReplayFn,
        *,
        now: datetime | None = None,
        wait: bool = True,
    ) -> RetrainAttempt:
        """Try to serve a retrain request: a fresh candidate on the window after ``since``.

        The window must hold :func:`examples_needed` labelled examples (the spec's
        ``min_examples`` to learn from plus the held-out slice).  With fewer, and
        ``wait`` true and the request younger than ``retrain_max_wait_s``, the
        request is recorded in :attr:`pending_retrains` and ``WAITING`` returned:
        the caller keeps it (uncommitted) and calls again when
        :meth:`retrain_recheck_due` says enough has arrived, or now and then.
        After the wait a candidate is trained on what there is if it can learn
        from ``retrain_min_fraction`` of ``min_examples``; otherwise ``REJECTED``
        (logged, counted in ``retrains.skipped``).

        Deduplicated by ``request_id`` in this process and, across restarts, in
        the registry: a request whose version already exists is not retrained.
        """
        if request.model_name != self.spec.name:
            self.retrains.other_models += 1
            return RetrainAttempt(RetrainStatus.OTHER_MODEL)
        rid = request.request_id
        if rid in self.retrains.seen:
            self.retrains.duplicates += 1
            return RetrainAttempt(RetrainStatus.DUPLICATE)
        existing = await self.sink.find_by_trigger(self.spec.name, rid)
        if existing is not None:
            self._finish(rid)
            self.retrains.duplicates += 1
            log.info("retrain %s already produced %s v%d", rid, self.spec.name, existing.version)
            return RetrainAttempt(RetrainStatus.DUPLICATE)
        plan = plan_replay(request, self.spec)
        examples = select_window(await replay(plan), plan)
        needed = examples_needed(self.spec)
        if len(examples) < needed and wait and not self.retrain_deadline_passed(request, now):
            if rid not in self.pending_retrains:
                self.retrains.deferred += 1
                log.info(
                    "retrain %s for %s waits: %d labelled examples after %s, %d needed",
                    rid, self.spec.name, len(examples), _since(request), needed,
                )  # fmt: skip
            self.pending_retrains[rid] = PendingRetrain(request, len(examples), needed)
            return RetrainAttempt(RetrainStatus.WAITING, window=len(examples), needed=needed)
        fresh = await asyncio.to_thread(train_fresh, self.spec, examples)
        floor = math.ceil(self.config.retrain_min_fraction * self.spec.retraining.min_examples)
        if fresh.trained_on < max(floor, 1):
            reason = (
                f"the window after {_since(request)} holds {len(examples)} labelled examples "
                f"({fresh.trained_on} to learn from, fewer than {floor}) after waiting "
                f"{self.config.retrain_max_wait_s:.0f}s; no candidate"
            )
            self._finish(rid)
            self.retrains.skipped += 1
            log.warning("retrain %s for %s rejected: %s", rid, self.spec.name, reason)
            return RetrainAttempt(RetrainStatus.REJECTED, None, len(examples), needed, reason)
        # train_fresh learns from the oldest ``trained_on`` examples of the window.
        reference = await asyncio.to_thread(
            build_reference,
            [self.spec.select(ex.vector.values) for ex in examples[: fresh.trained_on]],
            self.config.reference_bins,
        )
        async with self._lock:
            champion = await self._champion()
            names = list(dict.fromkeys([self.spec.metric, self.spec.promotion.metric]))
            cand, champ, decision = await asyncio.to_thread(
                self._compare,
                champion,
                lambda fair: evaluate(fresh.model, fair, self.spec, names),
                fresh.holdout,
                fresh.trained_on,
            )
            metrics = dict(cand)
            if champ is not None:
                metrics.update(_prefixed("champion_holdout_", champ))
            lineage = fresh.lineage.lineage(
                parent_version=champion.version.version if champion else None,
                trigger_id=rid,
            )
            version = await self.sink.register(
                self.spec.name,
                fresh.model,
                metrics=metrics,
                lineage=lineage,
                spec=self._version_spec(reference),
                idempotency_key=rid,
                actor=self.config.actor,
                drift_ids=tuple(request.drift_ids),
            )
            outcome = await self._promote(version, decision, rid)
        self._finish(rid)
        self.retrains.handled += 1
        self.candidates.append(outcome)
        return RetrainAttempt(RetrainStatus.REGISTERED, outcome, len(examples), needed)

    def _finish(self, request_id: str) -> None:
        self.retrains.seen.add(request_id)
        self.pending_retrains.pop(request_id, None)


def _since(request: RetrainRequest) -> str:
    if request.since_event_time is not None:
        return request.since_event_time.isoformat()
    return "the request's offsets" if request.since_offsets else "the window start"


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {
        f"{prefix}{k}": v for k, v in metrics.items() if k not in ("examples", "eval_examples")
    } | ({f"{prefix}examples": metrics["eval_examples"]} if "eval_examples" in metrics else {})
