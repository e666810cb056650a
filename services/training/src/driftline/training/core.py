"""The training core: join → learn → snapshot → register → promote, and retraining.

One :class:`TrainingCore` per model spec.  No sockets: the Kafka transport
feeds records in, the registry sits behind :class:`CandidateSink`, and the
replay of recent data for a retrain request is a function passed in.

A River model (``framework: river``) learns every joined example online and its
snapshots are the online model.  A batch model (``framework: sklearn`` with a
``pipeline``) learns nothing online: on schedule and on a retrain request a fresh
estimator is fitted on the replayed window (:mod:`driftline.training.batch`), and
both go through the same comparison with the champion, promotion policy and
registration.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from opentelemetry import trace

from driftline.contracts.errors import DriftlineError, FailedPreconditionError, IntegrityError
from driftline.contracts.messages import (
    FeatureVector,
    LabelValue,
    Lineage,
    RetrainRequest,
    ValidLabel,
    utcnow,
)
from driftline.contracts.topics import FEATURES, LABELS_VALID
from driftline.drift_stats import build_reference
from driftline.model_runtimes import ModelRuntime, load_runtime
from driftline.registry_api.promotion import Decision, PromotionPolicy, decide_promotion
from driftline.specs import (
    FeatureSetSpec,
    LabelSpec,
    ModelSpec,
    RecordRejected,
    metric_key,
)
from driftline.telemetry import ConsumerHealth
from driftline.telemetry.loop import (
    MODEL_ALIAS,
    MODEL_NAME,
    MODEL_VERSION,
    RETRAIN_ID,
    TRIGGER_ID,
)
from driftline.training.batch import (
    BatchLearner,
    evaluate_runtime,
    feature_names,
    fit_window,
    fitted_runtime,
    library_versions,
    model_input,
    signature_of,
)
from driftline.training.candidates import (
    CandidateSink,
    Champion,
    NewVersion,
    RegisteredVersion,
)
from driftline.training.label_join import JoinedExample, LabelJoin, Position
from driftline.training.learner import (
    EvalExample,
    OnlineLearner,
    Prediction,
    evaluate,
    recent_after,
    score_recorded,
)
from driftline.training.recurring import (
    RecurringConfig,
    choose_restore,
    earlier_champions,
    is_concept_drift,
    restored_for,
)
from driftline.training.retrain import (
    LOGGED_SKIPS,
    FreshCandidate,
    LabelChecker,
    ReplayPlan,
    check_request,
    check_window,
    examples_needed,
    plan_replay,
    schedule_plan,
    select_window,
    split_holdout,
    train_fresh,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("driftline.training")

ReplayFn = Callable[[ReplayPlan], Awaitable[list[JoinedExample[Any]]]]
"""Reads the recent window from the logs and returns the joined examples."""


@dataclass(frozen=True)
class CoreConfig:
    """The knobs of a core (from :class:`driftline.settings.TrainingSettings`)."""

    snapshot_every: int = 5000
    allowed_lateness_s: float = 3600.0
    orphan_retention_s: float = 3600.0
    expired_capacity: int = 100_000
    label_join_max_pending: int | None = 200_000
    """Most vectors (and, separately, labels) the join holds waiting (None: no cap)."""
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
    recurring: RecurringConfig = field(default_factory=RecurringConfig)
    """Restoring an earlier champion on a concept drift (see :mod:`.recurring`)."""


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
    restored: CandidateOutcome | None = None
    """An earlier champion this attempt restored (a recurring concept), if any."""

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
    recurring_at: int | None = None
    """Examples after ``since`` the earlier champions are scored at (None: not to do)."""

    @property
    def recheck_due(self) -> bool:
        """Whether enough examples have probably arrived for the window to be served, or
        for the earlier champions to be scored on it."""
        seen = self.window + self.arrived
        return seen >= self.needed or (self.recurring_at is not None and seen >= self.recurring_at)

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


class SkipReason(StrEnum):
    """Why the core passed over an example (``driftline_training_examples_skipped``)."""

    LABEL_TYPE = "label_type"
    """The label is not of the model's label type (see :meth:`TrainingCore.check_label`)."""
    MODEL_ERROR = "model_error"
    """The model raised predicting the example on arrival, or learning it."""


class TrainingCore:
    """The online learner of one model, its candidates, and its retraining.

    Every joined example is checked before it is learned: a label that is not of
    ``label_spec`` (the model's feature set's declaration; without one, the default
    for the model's task, see :func:`default_label_spec`) is skipped, and so is an
    example the model raises on (predicting it on arrival or learning it).  A skip
    never reaches the model; it is counted in :attr:`skipped`, logged with the event
    id and, when ``health`` is given, counted in ``driftline_records_skipped_total``
    at the record's topic, partition and offset.  Retraining applies the same label
    check to the replayed window.

    A batch model (not ``spec.online``) needs ``replay`` for its scheduled refits and
    reads its column order from ``spec.features`` or, without them, ``featureset``
    (which also types the inputs of a champion loaded through its runtime).
    """

    def __init__(
        self,
        spec: ModelSpec,
        sink: CandidateSink,
        config: CoreConfig | None = None,
        *,
        label_spec: LabelSpec | None = None,
        health: ConsumerHealth | None = None,
        featureset: FeatureSetSpec | None = None,
        replay: ReplayFn | None = None,
    ) -> None:
        if label_spec is not None and label_spec.type != spec.task:
            raise ValueError(
                f"model {spec.name} is a {spec.task} model; labels of type {label_spec.type} "
                "cannot train it"
            )
        if not spec.retrainable:
            raise ValueError(
                f"model {spec.name} ({spec.framework}) has no pipeline: training cannot train it"
            )
        self.spec = spec
        self.featureset = featureset
        self.replay = replay
        names = spec.feature_names(featureset)
        self.names: list[str] | None = names
        """The model's input columns in order (None: a River model of an undeclared
        feature set, which reads whatever a vector holds)."""
        self.sink = sink
        self.config = config or CoreConfig()
        self.labels = LabelChecker(spec.task, label_spec)
        """The check every label passes (see :meth:`check_label`)."""
        self.health = health
        self.skipped: Counter[SkipReason] = Counter()
        """Examples passed over, by reason (the online stream only, not replays)."""
        self._traced: set[type[BaseException]] = set()
        self.join: LabelJoin[Prediction] = LabelJoin(
            allowed_lateness_s=self.config.allowed_lateness_s,
            orphan_retention_s=self.config.orphan_retention_s,
            expired_capacity=self.config.expired_capacity,
            max_pending=self.config.label_join_max_pending,
            name=spec.name,
        )
        self.learner: OnlineLearner | BatchLearner
        if spec.online:
            self.learner = OnlineLearner(spec, eval_window=self.config.eval_window)
        else:
            columns = feature_names(spec, featureset)
            self.names = columns
            self.learner = BatchLearner(spec, columns, signature_of(columns, spec.task, featureset))
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
        self.restored: list[CandidateOutcome] = []
        """Earlier champions restored for a recurring concept (see :meth:`check_recurring`)."""
        self.recurring_checks: Counter[str] = Counter()
        """Recurring-concept checks by outcome (``restored``, ``kept``, ``none``: no earlier
        champion to score)."""
        self._recurring_done: set[str] = set()

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
        joined = self.join.add_vector(vector, pos, lambda v: self._observe(v, pos))
        if joined is None:
            return 0
        return self._learn(joined)

    def on_label(self, label: ValidLabel, pos: Position | None = None) -> int:
        """Take a label; returns how many examples were learned (0 or 1)."""
        joined = self.join.add_label(label, pos)
        if joined is None:
            return 0
        return self._learn(joined)

    def flush(self) -> None:
        """Score the arrival predictions a batch model still owes (a no-op for River,
        which scores each example as it learns it)."""
        if isinstance(self.learner, BatchLearner):
            self.learner.flush()

    @property
    def label_spec(self) -> LabelSpec | None:
        """The check every label passes; None until the first label when no feature set
        declares one (then the task's default, fixed by the first label that passes it)."""
        return self.labels.spec

    @label_spec.setter
    def label_spec(self, value: LabelSpec | None) -> None:
        self.labels.spec = value

    def check_label(self, value: LabelValue) -> LabelValue:
        """``value`` as the model learns it; :class:`RecordRejected` when it is not of the
        model's label type (``"maybe"`` for a binary model, NaN for regression, a class
        a multiclass feature set does not declare)."""
        return self.labels(value)

    def _observe(self, vector: FeatureVector, pos: Position | None) -> Prediction:
        try:
            return self.learner.observe(vector)
        except Exception as exc:
            # Isolates the example: without its prediction it is not learned either
            # (test-then-train), and the model goes on with the next one.
            why = f"predict raised {type(exc).__name__}: {exc}"
            self._skip(SkipReason.MODEL_ERROR, why, vector.event_id, pos, FEATURES.name, exc)
            return Prediction(error=why)

    def _learn(self, joined: JoinedExample[Prediction]) -> int:
        if joined.attachment.error is not None:
            return 0  # skipped (and counted) when its prediction failed
        eid, pos = joined.event_id, joined.label_pos
        try:
            y = self.check_label(joined.label.label)
        except RecordRejected as exc:
            self._skip(SkipReason.LABEL_TYPE, exc.detail, eid, pos, LABELS_VALID.name)
            return 0
        if y != joined.label.label or type(y) is not type(joined.label.label):
            joined = replace(joined, label=joined.label.model_copy(update={"label": y}))
        try:
            self.learner.learn(joined)
        except Exception as exc:
            # Isolates the example: learn() records nothing of it when the model raises.
            why = f"learn_one raised {type(exc).__name__}: {exc}"
            self._skip(SkipReason.MODEL_ERROR, why, eid, pos, LABELS_VALID.name, exc)
            return 0
        for pending in self.pending_retrains.values():
            pending.count(joined.event_time)
        return 1

    def _skip(
        self,
        reason: SkipReason,
        detail: str,
        event_id: str,
        pos: Position | None,
        topic: str,
        exc: BaseException | None = None,
    ) -> None:
        self.skipped[reason] += 1
        detail = f"model {self.spec.name}: {detail}"
        if exc is not None and type(exc) not in self._traced:
            # One traceback per kind of failure is what a bug report needs; a model
            # that raises on every example would otherwise flood the log.
            self._traced.add(type(exc))
            log.error("model %s raised on event %s; skipping the example (traceback once per "
                      "error type)", self.spec.name, event_id, exc_info=exc)  # fmt: skip
        if self.health is not None:
            self.health.skip(
                pos.topic if pos else topic,
                pos.partition if pos else None,
                pos.offset if pos else None,
                reason.value,
                detail,
                event_id=event_id,
            )
        else:
            log.warning("skipped event %s: %s: %s", event_id, reason.value, detail)

    def _checked_window(
        self, examples: Iterable[JoinedExample[Any]], request_id: str
    ) -> list[JoinedExample[Any]]:
        """The replayed ``examples`` of this model's feature set whose labels pass
        :meth:`check_label` (the others are logged, not counted as skips of the stream:
        the online loop counted them when it read them)."""
        rejected = 0

        def left_out(ex: JoinedExample[Any], exc: RecordRejected) -> None:
            nonlocal rejected
            rejected += 1
            if rejected <= LOGGED_SKIPS:
                log.warning("retrain %s for %s leaves out event %s: %s",
                            request_id, self.spec.name, ex.event_id, exc.detail)  # fmt: skip

        out = check_window(examples, self.spec.featureset, self.check_label, left_out)
        if rejected > LOGGED_SKIPS:
            wanted = self.label_spec.describe() if self.label_spec else self.spec.task
            log.warning("retrain %s for %s left out %d examples whose label is not %s",
                        request_id, self.spec.name, rejected, wanted)  # fmt: skip
        return out

    def postpone_snapshot(self) -> None:
        """Try the scheduled snapshot again only after ``snapshot_every`` more examples
        (a snapshot that failed because of the model itself would fail at every batch)."""
        self.last_snapshot_at = self.learner.learned

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
        self._champion_cache = await self._load_version(current)
        return self._champion_cache

    async def _load_version(self, version: RegisteredVersion) -> Champion:
        """A version of this model, loaded to be scored (and served from, once champion)."""
        if self.spec.online and version.framework == "river":
            return Champion(version, await self.sink.load_model(self.spec.name, version.version))
        runtime = await self._load_runtime(version)
        return Champion(version, runtime.model, runtime)

    async def _load_runtime(self, version: RegisteredVersion) -> ModelRuntime:
        """A version of this model through its framework's runtime (whatever the framework:
        a champion registered elsewhere, ONNX or a Python class, is compared like any).

        The sink verifies the artifact's signature before the bytes reach the runtime.
        Raises :class:`FailedPreconditionError` when the runtime cannot load it.
        """
        artifact = await self.sink.load_artifact(self.spec.name, version.version)
        recorded = artifact.spec
        names = recorded.get("features") or self.names
        if not names:
            raise FailedPreconditionError(
                f"{self.spec.name} v{version.version} records no features and the feature set "
                f"{self.spec.featureset} is not declared: its input columns are unknown"
            )
        classes = recorded.get("classes")
        signature = signature_of(
            [str(n) for n in names], recorded.get("task") or self.spec.task, self.featureset,
            classes=classes,
        )  # fmt: skip
        return await asyncio.to_thread(
            load_runtime,
            artifact.framework,
            artifact.artifact_format,
            artifact.data,
            signature,
            recorded,
        )

    async def warm_up(self) -> None:
        """Load the champion of a batch model to predict arrivals with until this process
        fits one (a River model predicts with its own online model: nothing to do).

        A champion that cannot be loaded is logged and left out (arrivals go unscored).
        """
        if self.spec.online or not isinstance(self.learner, BatchLearner):
            return
        try:
            champion = await self._champion()
        except DriftlineError as exc:
            log.warning("%s: the champion could not be loaded to score arrivals: %s",
                        self.spec.name, exc.message)  # fmt: skip
            return
        if champion is not None and champion.runtime is not None:
            self.learner.use(champion.runtime)
            log.info("%s: arrivals are scored with the champion v%d (%s) until the next fit",
                     self.spec.name, champion.version.version,
                     champion.runtime.describe())  # fmt: skip

    def _score_champion(
        self, champion: Champion, examples: Sequence[EvalExample], names: Sequence[str]
    ) -> dict[str, float]:
        if champion.runtime is not None:
            classes = self.learner.classes if isinstance(self.learner, BatchLearner) else None
            return evaluate_runtime(champion.runtime, examples, self.spec, names, classes)
        return evaluate(champion.model, examples, self.spec, names)

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
        champ = self._score_champion(champion, fair, [promo]) if champion else None
        decision = decide_promotion(cand, champ, self.policy)
        return cand, champ, decision

    async def snapshot(self) -> CandidateOutcome | None:
        """Register the online model as a candidate now and apply the promotion policy.

        A batch model is refitted instead (:meth:`refit`); None when its window held too
        few labelled examples to fit on (the next schedule tries again).
        """
        if not self.spec.online:
            return await self.refit()
        async with self._lock:
            learner = self.learner
            assert isinstance(learner, OnlineLearner)
            champion = await self._champion()
            promo = self.spec.promotion.metric
            # Only a prediction made by a model that had learned something is evidence
            # of it: a standby that takes over observes its backlog's vectors before it
            # has learned one label, and those predictions would read as all wrong.
            measured = [
                e for e in learner.recent if e.prediction.measures(learner.promotion_metric)
            ]
            cand, champ, decision = self._compare(
                champion,
                lambda fair: score_recorded(fair, self.spec, [promo]),
                measured,
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
            # The online model learned from the whole stream; its recent examples
            # are the distribution it fits now, which is what live data is held to.
            reference = build_reference(
                (e.x for e in learner.recent), bins=self.config.reference_bins
            )
            outcome = await self._register_candidate(
                learner.model,
                {**learner.metrics(), **_prefixed("holdout_", cand)},
                champ,
                learner.lineage.lineage(parent_version=self.parent_version, trigger_id=trigger),
                reference,
                decision,
            )
            self.parent_version = outcome.version.version
            self.last_snapshot_at = learner.learned
            self.candidates.append(outcome)
            return outcome

    def _version_spec(self, reference: dict[str, Any]) -> dict[str, Any]:
        """The spec recorded with a version: the model spec plus ``"reference"``, the
        statistics of the vectors it trained on (see :mod:`driftline.drift_stats`),
        which the monitor compares live windows against once it is champion.

        A batch model's spec names its ``features`` in the order of its input matrix
        (the feature set's when the spec leaves them out): serving feeds it that order.
        """
        recorded = self.spec.model_dump(mode="json")
        if not self.spec.online and self.names is not None:
            recorded["features"] = list(self.names)
        return {**recorded, "reference": reference}

    # -- batch models ---------------------------------------------------------------------

    async def refit(self) -> CandidateOutcome | None:
        """The scheduled fit of a batch model: a fresh estimator on the spec's window
        replayed from the logs, compared with the champion on its newest slice.

        None (and nothing registered) when the window holds fewer than
        :func:`examples_needed` labelled examples.  Raises
        :class:`FailedPreconditionError` without a replay function, or when the
        estimator refuses the window.
        """
        if self.replay is None:
            raise FailedPreconditionError(
                f"model {self.spec.name} is refitted on a replayed window, but training "
                "was given no replay"
            )
        learner = self.learner
        assert isinstance(learner, BatchLearner)
        trigger = f"schedule:{self.spec.name}:{learner.learned}:{uuid.uuid4().hex[:12]}"
        plan = schedule_plan(self.spec, learner.last_event_time)
        examples = select_window(self._checked_window(await self.replay(plan), trigger), plan)
        needed = examples_needed(self.spec)
        self.last_snapshot_at = learner.learned
        if len(examples) < needed:
            log.info("%s: the scheduled fit waits: the window holds %d labelled examples, %d "
                     "needed", self.spec.name, len(examples), needed)  # fmt: skip
            return None
        fit = await asyncio.to_thread(fit_window, self.spec, examples, learner.names)
        outcome = await self._register_fit(fit, trigger, None)
        self.candidates.append(outcome)
        return outcome

    async def _register_fit(
        self, fit: FreshCandidate, trigger: str, request: RetrainRequest | None
    ) -> CandidateOutcome:
        """Compare a fitted estimator with the champion on its held-out slice, register it
        (``framework="sklearn"``) and apply the promotion policy."""
        learner = self.learner
        assert isinstance(learner, BatchLearner) and self.names is not None
        candidate = fitted_runtime(fit, learner.signature)
        # The reference describes exactly what the candidate was fitted on.
        reference = await asyncio.to_thread(
            build_reference, fit.trained_x, self.config.reference_bins
        )
        names = list(dict.fromkeys([self.spec.metric, self.spec.promotion.metric]))
        async with self._lock:
            unloadable = ""
            try:
                champion = await self._champion()
            except (FailedPreconditionError, IntegrityError) as exc:
                # Registered all the same (as challenger): a person can compare and promote.
                champion, unloadable = None, exc.message
            cand, champ, decision = await asyncio.to_thread(
                self._compare,
                champion,
                lambda fair: evaluate_runtime(candidate, fair, self.spec, names, learner.classes),
                fit.holdout,
                fit.trained_on,
            )
            if unloadable:
                decision = Decision(
                    False, f"the champion could not be loaded to compare ({unloadable}); the "
                    "candidate stays challenger",
                )  # fmt: skip
            elif request is None and decision.promote and champion and self.pending_retrains:
                waiting = ", ".join(sorted(self.pending_retrains))
                decision = Decision(
                    False,
                    f"{decision.reason}; but retrain request(s) {waiting} are pending for "
                    "this model, so the scheduled fit stays challenger",
                )
            outcome = await self._register_candidate(
                fit.model,
                {**learner.metrics(), **cand},
                champ,
                fit.lineage.lineage(
                    parent_version=champion.version.version if champion else self.parent_version,
                    trigger_id=trigger,
                ),
                reference,
                decision,
                drift_ids=tuple(request.drift_ids) if request is not None else (),
                framework=self.spec.framework,
                library_versions=library_versions(fit.model),
            )
        # Arrivals are scored by the model serving will answer with: the candidate once
        # promoted, else the champion (the candidate when there is none to load).
        in_use = candidate if decision.promote or champion is None else champion.runtime
        learner.use(in_use or candidate)
        self.parent_version = outcome.version.version
        return outcome

    async def _register_candidate(
        self,
        model: Any,
        metrics: dict[str, float],
        champ: dict[str, float] | None,
        lineage: Lineage,
        reference: dict[str, Any],
        decision: Decision,
        **extra: Any,
    ) -> CandidateOutcome:
        """Register ``model`` under its lineage's trigger (the champion's holdout scores,
        when it was scored, among its metrics) and give it the alias ``decision`` picks.

        ``extra`` are the other fields of its :class:`NewVersion` (drift ids, framework …).
        """
        trigger = lineage.trigger_id or ""
        if champ is not None:
            metrics = {**metrics, **_prefixed("champion_holdout_", champ)}
        new = NewVersion(
            metrics=metrics,
            lineage=lineage,
            spec=self._version_spec(reference),
            idempotency_key=trigger,
            actor=self.config.actor,
            **extra,
        )
        version = await self.sink.register(self.spec.name, model, new)
        trace.get_current_span().set_attribute(MODEL_VERSION, version.version)
        return await self._promote(version, decision, trigger)

    async def _promote(
        self, version: RegisteredVersion, decision: Decision, trigger: str, *, reused: bool = False
    ) -> CandidateOutcome:
        alias = "champion" if decision.promote else "challenger"
        with tracer.start_as_current_span(
            f"promote {self.spec.name}",
            attributes={
                MODEL_NAME: self.spec.name,
                MODEL_VERSION: version.version,
                MODEL_ALIAS: alias,
                "driftline.promotion.reason": decision.reason,
                **({TRIGGER_ID: trigger} if trigger else {}),
            },
        ):
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

        Raises :class:`~driftline.contracts.errors.InvalidArgumentError` for a request
        that can never be served (see :func:`check_request`): the caller drops it.
        """
        if request.model_name != self.spec.name:
            self.retrains.other_models += 1
            return RetrainAttempt(RetrainStatus.OTHER_MODEL)
        check_request(request, now)
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
        needed = examples_needed(self.spec)
        was_pending = rid in self.pending_retrains
        if not was_pending:
            # Pending from the moment it is read: a scheduled snapshot promoted while the
            # window is replayed would pre-empt it (a replay once took 30 s on a busy
            # machine, and the schedule promoted the online model meanwhile).
            self.pending_retrains[rid] = PendingRetrain(request, 0, needed)
        try:
            return await self._attempt_window(request, replay, now, wait, needed, was_pending)
        except BaseException:
            if not was_pending:
                self.pending_retrains.pop(rid, None)  # the caller tries again, or drops it
            raise

    async def _attempt_window(
        self,
        request: RetrainRequest,
        replay: ReplayFn,
        now: datetime | None,
        wait: bool,
        needed: int,
        was_pending: bool,
    ) -> RetrainAttempt:
        """:meth:`attempt_retrain` from the replay on (the request is pending meanwhile)."""
        rid = request.request_id
        examples = await self.window_for(request, replay)
        restored = await self.check_recurring(request, examples)
        if len(examples) < needed and wait and not self.retrain_deadline_passed(request, now):
            if not was_pending:
                self.retrains.deferred += 1
                log.info(
                    "retrain %s for %s waits: %d labelled examples after %s, %d needed",
                    rid, self.spec.name, len(examples), _since(request), needed,
                )  # fmt: skip
            recurring_at = (
                self.config.recurring.min_examples if self._recurring_due(request) else None
            )
            self.pending_retrains[rid] = PendingRetrain(
                request, len(examples), needed, recurring_at=recurring_at
            )
            return RetrainAttempt(
                RetrainStatus.WAITING, window=len(examples), needed=needed, restored=restored
            )
        # The loop's "candidate trained" hop: a child of the request's span, the parent of
        # its registration and promotion (the registry continues it from the call).
        with tracer.start_as_current_span(
            f"candidate {self.spec.name}",
            attributes={
                RETRAIN_ID: rid,
                MODEL_NAME: self.spec.name,
                "driftline.retrain.window": len(examples),
            },
        ):
            attempt = await self._train_candidate(request, examples, needed)
        return replace(attempt, restored=restored) if restored is not None else attempt

    async def _train_candidate(
        self, request: RetrainRequest, examples: list[JoinedExample[Any]], needed: int
    ) -> RetrainAttempt:
        """:meth:`attempt_retrain` once the window is there: fit, compare, register, promote."""
        rid = request.request_id
        if not self.spec.online:
            return await self._retrain_batch(request, examples, needed)
        fresh = await asyncio.to_thread(train_fresh, self.spec, examples)
        if fresh.trained_on < self._retrain_floor:
            return self._reject(request, len(examples), fresh.trained_on, needed)
        # The reference describes exactly what the candidate learned from.
        reference = await asyncio.to_thread(
            build_reference, fresh.trained_x, self.config.reference_bins
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
            outcome = await self._register_candidate(
                fresh.model,
                dict(cand),
                champ,
                fresh.lineage.lineage(
                    parent_version=champion.version.version if champion else None,
                    trigger_id=rid,
                ),
                reference,
                decision,
                drift_ids=tuple(request.drift_ids),
            )
        self._finish(rid)
        self.retrains.handled += 1
        self.candidates.append(outcome)
        return RetrainAttempt(RetrainStatus.REGISTERED, outcome, len(examples), needed)

    @property
    def _retrain_floor(self) -> int:
        """Fewest examples a retrain candidate must learn from (after the longest wait)."""
        floor = math.ceil(self.config.retrain_min_fraction * self.spec.retraining.min_examples)
        return max(floor, 1)

    def _reject(
        self, request: RetrainRequest, window: int, trained_on: int, needed: int
    ) -> RetrainAttempt:
        floor = math.ceil(self.config.retrain_min_fraction * self.spec.retraining.min_examples)
        reason = (
            f"the window after {_since(request)} holds {window} labelled examples "
            f"({trained_on} to learn from, fewer than {floor}) after waiting "
            f"{self.config.retrain_max_wait_s:.0f}s; no candidate"
        )
        rid = request.request_id
        self._finish(rid)
        self.retrains.skipped += 1
        log.warning("retrain %s for %s rejected: %s", rid, self.spec.name, reason)
        return RetrainAttempt(RetrainStatus.REJECTED, None, window, needed, reason)

    async def _retrain_batch(
        self, request: RetrainRequest, examples: list[JoinedExample[Any]], needed: int
    ) -> RetrainAttempt:
        """A batch model's candidate for ``request``: fitted on the window after ``since``."""
        held = split_holdout(
            len(examples), self.spec.retraining.holdout, self.spec.promotion.min_eval_examples
        )
        if len(examples) - held < self._retrain_floor:
            return self._reject(request, len(examples), len(examples) - held, needed)
        learner = self.learner
        assert isinstance(learner, BatchLearner)
        fit = await asyncio.to_thread(fit_window, self.spec, examples, learner.names)
        if fit.trained_on < self._retrain_floor:
            return self._reject(request, len(examples), fit.trained_on, needed)
        outcome = await self._register_fit(fit, request.request_id, request)
        self._finish(request.request_id)
        self.retrains.handled += 1
        self.candidates.append(outcome)
        return RetrainAttempt(RetrainStatus.REGISTERED, outcome, len(examples), needed)

    async def window_for(
        self, request: RetrainRequest, replay: ReplayFn
    ) -> list[JoinedExample[Any]]:
        """The labelled examples a candidate for ``request`` learns from (and is held out
        on), oldest first: the replay of :func:`plan_replay`, this model's feature set,
        labels checked, :func:`select_window` applied.  ``driftline features export``
        selects with the same functions."""
        plan = plan_replay(request, self.spec)
        return select_window(self._checked_window(await replay(plan), request.request_id), plan)

    def _finish(self, request_id: str) -> None:
        self.retrains.seen.add(request_id)
        self.pending_retrains.pop(request_id, None)
        self._recurring_done.add(request_id)

    # -- recurring concepts ---------------------------------------------------------------

    def _recurring_due(self, request: RetrainRequest) -> bool:
        """Whether the earlier champions are still to be scored for ``request``."""
        return (
            self.config.recurring.enabled
            and request.request_id not in self._recurring_done
            and is_concept_drift(request)
        )

    def _eval_examples(self, examples: Sequence[JoinedExample[Any]]) -> list[EvalExample]:
        """Replayed examples as a model of this spec reads them, to be scored on."""
        if self.spec.online or self.names is None:
            select = self.spec.select
        else:
            names = self.names
            select = lambda values: model_input(values, names)  # noqa: E731
        return [
            EvalExample(select(ex.vector.values), ex.label.label, ex.event_time, Prediction())
            for ex in examples
        ]

    async def check_recurring(
        self, request: RetrainRequest, examples: Sequence[JoinedExample[Any]]
    ) -> CandidateOutcome | None:
        """Restore an earlier champion if the concept it learned is back.

        Once per concept-drift request, as soon as ``examples`` (the labelled window after
        the onset) holds :attr:`RecurringConfig.min_examples`: the most recent earlier
        champions (the alias history) and the champion are scored on the examples none of
        them learned from; the winner chosen by
        :func:`~driftline.training.recurring.choose_restore` becomes champion again
        (reason ``recurring concept: …``, the request's id as trigger).  The request goes
        on waiting for its fresh candidate, which then has to beat the restored champion.

        Returns the restoration, or None (nothing to check yet, nothing better, done before).
        """
        cfg = self.config.recurring
        if not self._recurring_due(request) or len(examples) < cfg.min_examples:
            return None
        rid, name = request.request_id, self.spec.name
        with tracer.start_as_current_span(
            f"recurring {name}",
            attributes={
                RETRAIN_ID: rid,
                MODEL_NAME: name,
                "driftline.recurring.window": len(examples),
            },
        ) as span:
            async with self._lock:
                outcome, result = await self._restore_if_better(request, examples, cfg)
            span.set_attribute("driftline.recurring.outcome", result)
        if result != "wait":
            self._recurring_done.add(rid)
            self.recurring_checks[result] += 1
            pending = self.pending_retrains.get(rid)
            if pending is not None:
                pending.recurring_at = None
        if outcome is not None:
            self.restored.append(outcome)
        return outcome

    async def _restore_if_better(
        self, request: RetrainRequest, examples: Sequence[JoinedExample[Any]], cfg: RecurringConfig
    ) -> tuple[CandidateOutcome | None, str]:
        """:meth:`check_recurring` under the lock: the restoration, if any, and the outcome
        (``restored``, ``kept``, ``none``; ``wait``: too few examples none of them learned)."""
        rid, name = request.request_id, self.spec.name
        span = trace.get_current_span()
        changes = await self.sink.champion_changes(name)
        if restored_for(changes, rid) is not None:
            log.info("retrain %s for %s: an earlier champion was restored for it already",
                     rid, name)  # fmt: skip
            return None, "kept"
        try:
            champion = await self._champion()
        except DriftlineError as exc:
            if exc.retriable:
                raise  # the registry is unreachable: the loop tries the request again
            log.warning("retrain %s for %s: the champion cannot be loaded to compare with "
                        "earlier ones (%s)", rid, name, exc.message)  # fmt: skip
            return None, "none"
        if champion is None:
            return None, "none"
        versions = earlier_champions(changes, champion.version.version, cfg.max_candidates)
        span.set_attribute("driftline.recurring.versions", versions)
        if not versions:
            log.info("retrain %s for %s: no earlier champion to score", rid, name)
            return None, "none"
        earlier: dict[int, Champion] = {}
        for v in versions:
            try:
                earlier[v] = await self._load_version(await self.sink.get_version(name, v))
            except DriftlineError as exc:
                if exc.retriable:
                    raise
                # Deleted, tampered with, of a runtime not installed here: the others count.
                log.warning("%s v%d cannot be scored for a recurring concept: %s", name, v,
                            exc.message)  # fmt: skip
        # Only examples none of them has learned from are a fair test.
        learned = [
            c.version.lineage.event_time_to
            for c in (champion, *earlier.values())
            if c.version.lineage is not None and c.version.lineage.event_time_to is not None
        ]
        window = recent_after(self._eval_examples(examples), max(learned, default=None))
        if len(window) < cfg.min_examples:
            return None, "wait"
        promo = self.spec.promotion.metric
        policy = replace(self.policy, min_eval_examples=cfg.min_examples)

        def score() -> tuple[dict[int, dict[str, float]], dict[str, float]]:
            scores = {v: self._score_champion(c, window, [promo]) for v, c in earlier.items()}
            return scores, self._score_champion(champion, window, [promo])

        scores, champ = await asyncio.to_thread(score)
        choice = choose_restore(
            scores, champ, champion=champion.version.version, policy=policy,
            min_score=cfg.min_score,
        )  # fmt: skip
        if choice.version is None:
            log.info("retrain %s for %s: no earlier champion restored (%s)", rid, name,
                     choice.reason)  # fmt: skip
            span.set_attribute("driftline.recurring.reason", choice.reason)
            return None, "kept"
        restore = earlier[choice.version]
        outcome = await self._promote(restore.version, Decision(True, choice.reason), rid)
        self._champion_cache = restore
        if isinstance(self.learner, BatchLearner) and restore.runtime is not None:
            self.learner.use(restore.runtime)  # arrivals are scored by what serving answers with
        log.info("retrain %s for %s: restored v%d (%s)", rid, name, choice.version, choice.reason)
        return replace(outcome, reused=True), "restored"


def _since(request: RetrainRequest) -> str:
    if request.since_event_time is not None:
        return request.since_event_time.isoformat()
    return "the request's offsets" if request.since_offsets else "the window start"


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {
        f"{prefix}{k}": v for k, v in metrics.items() if k not in ("examples", "eval_examples")
    } | ({f"{prefix}examples": metrics["eval_examples"]} if "eval_examples" in metrics else {})
