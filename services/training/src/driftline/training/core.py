"""The training core: join → learn → snapshot → register → promote, and retraining.

One :class:`TrainingCore` per model spec.  No sockets: the Kafka transport
feeds records in, the registry sits behind :class:`CandidateSink`, and the
replay of recent data for a retrain request is a function passed in.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel
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
from driftline.training.retrain import ReplayPlan, plan_replay, select_window, train_fresh

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


@dataclass(frozen=True)
class CandidateOutcome:
    """What happened to one candidate: its version, the decision, the alias it got."""

    version: RegisteredVersion
    decision: Decision
    alias: str
    reused: bool = False
    """True when the registry already had it (a replayed retrain request)."""


@dataclass
class RetrainStats:
    """Counters of retrain requests."""

    handled: int = 0
    duplicates: int = 0
    skipped: int = 0
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
        self.learner.learn(joined)
        return 1

    def on_label(self, label: ValidLabel, pos: Position | None = None) -> int:
        """Take a label; returns how many examples were learned (0 or 1)."""
        joined = self.join.add_label(label, pos)
        if joined is None:
            return 0
        self.learner.learn(joined)
        return 1

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
            trigger = f"schedule:{self.spec.name}:{learner.learned}:{uuid.uuid4().hex[:12]}"
            metrics = {**learner.metrics(), **_prefixed("holdout_", cand)}
            if champ is not None:
                metrics.update(_prefixed("champion_holdout_", champ))
            lineage = learner.lineage.lineage(
                parent_version=self.parent_version, trigger_id=trigger
            )
            version = await self.sink.register(
                self.spec.name,
                learner.model,
                metrics=metrics,
                lineage=lineage,
                spec=self.spec.model_dump(mode="json"),
                idempotency_key=trigger,
                actor=self.config.actor,
            )
            outcome = await self._promote(version, decision, trigger)
            self.parent_version = version.version
            self.last_snapshot_at = learner.learned
            self.candidates.append(outcome)
            return outcome

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
        """Handle a retrain request: a fresh candidate on the replayed window.

        Deduplicated by ``request_id`` in this process and, across restarts, in
        the registry: a request whose version already exists is not retrained.
        Returns None for a duplicate, another model's request, or a window with
        fewer than the spec's minimum examples (logged).
        """
        if request.model_name != self.spec.name:
            self.retrains.other_models += 1
            return None
        if request.request_id in self.retrains.seen:
            self.retrains.duplicates += 1
            return None
        existing = await self.sink.find_by_trigger(self.spec.name, request.request_id)
        if existing is not None:
            self.retrains.seen.add(request.request_id)
            self.retrains.duplicates += 1
            log.info(
                "retrain %s already produced %s v%d",
                request.request_id,
                self.spec.name,
                existing.version,
            )
            return None
        plan = plan_replay(request, self.spec)
        examples = select_window(await replay(plan), plan)
        fresh = await asyncio.to_thread(train_fresh, self.spec, examples)
        if fresh.trained_on < self.spec.retraining.min_examples:
            self.retrains.seen.add(request.request_id)
            self.retrains.skipped += 1
            log.warning(
                "retrain %s for %s: the window holds %d training examples (< min_examples %d); "
                "no candidate",
                request.request_id,
                self.spec.name,
                fresh.trained_on,
                self.spec.retraining.min_examples,
            )
            return None
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
                trigger_id=request.request_id,
            )
            version = await self.sink.register(
                self.spec.name,
                fresh.model,
                metrics=metrics,
                lineage=lineage,
                spec=self.spec.model_dump(mode="json"),
                idempotency_key=request.request_id,
                actor=self.config.actor,
                drift_ids=tuple(request.drift_ids),
            )
            outcome = await self._promote(version, decision, request.request_id)
        self.retrains.seen.add(request.request_id)
        self.retrains.handled += 1
        self.candidates.append(outcome)
        return outcome


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {
        f"{prefix}{k}": v for k, v in metrics.items() if k not in ("examples", "eval_examples")
    } | ({f"{prefix}examples": metrics["eval_examples"]} if "eval_examples" in metrics else {})
