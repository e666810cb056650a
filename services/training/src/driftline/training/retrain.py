"""Retraining: which data to replay, and training a fresh candidate on it.

Pure logic: the Kafka replay (``replay.py``) reads what :func:`plan_replay`
asks for; :func:`train_fresh` learns a new pipeline from the spec on the older
part of the window and keeps the most recent slice for evaluation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from driftline.contracts.errors import InvalidArgumentError
from driftline.contracts.messages import DlqReason, LabelValue, RetrainRequest, utcnow
from driftline.contracts.topics import FEATURES, LABELS_VALID
from driftline.specs import LabelSpec, ModelSpec, RecordRejected, default_label_spec
from driftline.specs.label import LabelTask
from driftline.training.label_join import JoinedExample
from driftline.training.learner import EvalExample, LineageTracker, Prediction

log = logging.getLogger(__name__)

CLOCK_SKEW = timedelta(hours=1)
"""How far ahead of this process's clock a request's times may be before it is refused
(producers' clocks differ; a time beyond this is an impossible request, not skew)."""

LOGGED_SKIPS = 10
"""Examples a replay skips that are logged one by one; the rest are counted in a summary."""

_REPLAYED = {t.name: t.partitions for t in (FEATURES, LABELS_VALID)}


@dataclass(frozen=True)
class ReplayPlan:
    """Where a replay starts (per topic) and how much of what it reads is kept."""

    since_event_time: datetime | None
    """Seek every partition to the first record at or after this time."""
    since_offsets: dict[tuple[str, int], int]
    """Explicit start offsets, ``(topic, partition) -> offset``; win over the time."""
    tail_records: int | None
    """Without a start: seek each partition this many records back from its end."""
    keep_examples: int | None
    """Keep at most the newest this many joined examples."""
    keep_seconds: float | None
    """Keep only examples within this event-time span of the newest one."""


def parse_offsets(raw: dict[str, int]) -> dict[tuple[str, int], int]:
    """``{"driftline.features:3": 120}`` → ``{("driftline.features", 3): 120}``.

    Raises :class:`InvalidArgumentError` for a key that is not ``topic:partition``, a
    negative offset, or a partition the replay does not read (only the partitions of
    ``driftline.features`` and ``driftline.labels.valid`` are replayed).
    """
    out: dict[tuple[str, int], int] = {}
    for key, offset in raw.items():
        topic, sep, part = key.rpartition(":")
        if not sep or not topic or not part.isdigit() or offset < 0:
            raise InvalidArgumentError(
                f"since_offsets key {key!r} (offset {offset}) is not 'topic:partition' -> offset>=0"
            )
        partitions = _REPLAYED.get(topic)
        if partitions is None or int(part) >= partitions:
            known = ", ".join(f"{t}:0..{n - 1}" for t, n in _REPLAYED.items())
            raise InvalidArgumentError(
                f"since_offsets key {key!r} names a partition retraining does not replay "
                f"(it reads {known})"
            )
        out[(topic, int(part))] = offset
    return out


def check_request(request: RetrainRequest, now: datetime | None = None) -> None:
    """Refuse a request that can never be served: :class:`InvalidArgumentError` naming why.

    A ``requested_at`` or ``since_event_time`` more than :data:`CLOCK_SKEW` ahead of
    ``now`` is impossible (such a request would wait for labels until a date that
    may never come), and so are ``since_offsets`` that :func:`parse_offsets` refuses.
    """
    limit = (now or utcnow()) + CLOCK_SKEW
    for name in ("requested_at", "since_event_time"):
        value: datetime | None = getattr(request, name)
        if value is not None and value > limit:
            raise InvalidArgumentError(
                f"{name} {value.isoformat()} is in the future (more than "
                f"{CLOCK_SKEW.total_seconds() / 3600:g}h ahead of this clock)"
            )
    parse_offsets(request.since_offsets)


def plan_replay(request: RetrainRequest, spec: ModelSpec) -> ReplayPlan:
    """The replay for ``request``: its ``since`` if given, else the spec's window."""
    policy = spec.retraining
    offsets = parse_offsets(request.since_offsets)
    since = request.since_event_time
    tail = None
    if since is None and not offsets:
        # No start: read back far enough that the window can be filled even if
        # every partition but one were empty.
        n = policy.window_examples
        tail = n if n is not None else None
    return ReplayPlan(
        since_event_time=since,
        since_offsets=offsets,
        tail_records=tail,
        keep_examples=policy.window_examples,
        keep_seconds=policy.window_seconds,
    )


def schedule_plan(spec: ModelSpec, newest: datetime | None) -> ReplayPlan:
    """The replay of a batch model's scheduled fit: the spec's window up to now.

    A window of examples reads that many records back from the end of every
    partition (as a request without ``since`` does); a duration window seeks to
    ``newest`` (the newest labelled event time seen) minus the duration.
    """
    policy = spec.retraining
    since = None
    if policy.window_seconds is not None and newest is not None:
        since = newest - timedelta(seconds=policy.window_seconds)
    return ReplayPlan(
        since_event_time=since,
        since_offsets={},
        tail_records=policy.window_examples,
        keep_examples=policy.window_examples,
        keep_seconds=policy.window_seconds,
    )


class LabelChecker:
    """The check every label passes before a model learns from it.

    ``spec`` is the label type the feature set declares; without one, the default
    for ``task`` (:func:`default_label_spec`; a multiclass model's class type is fixed
    by the first label that passes).  Without a task either (a training set exported
    for no particular model), any finite scalar passes.
    """

    def __init__(self, task: LabelTask | None, spec: LabelSpec | None = None) -> None:
        self.task = task
        self.spec = spec

    def __call__(self, value: LabelValue) -> LabelValue:
        """``value`` as the model learns it; :class:`RecordRejected` when it is not of the
        label type (``"maybe"`` for a binary model, NaN for regression …)."""
        if self.spec is None and self.task is None:
            if isinstance(value, float) and not math.isfinite(value):
                raise RecordRejected(
                    DlqReason.CONSTRAINT, f"label: {value!r} is not a finite number"
                )
            return value
        spec = self.spec or default_label_spec(self.task or "regression", value)
        checked = spec.check(value)
        self.spec = spec
        return checked


def check_window(
    examples: Iterable[JoinedExample[Any]],
    featureset: str,
    check: Callable[[LabelValue], LabelValue],
    rejected: Callable[[JoinedExample[Any], RecordRejected], None] | None = None,
) -> list[JoinedExample[Any]]:
    """The replayed ``examples`` of ``featureset`` whose labels pass ``check`` (each with
    its label as ``check`` returns it); every other one is handed to ``rejected``."""
    out: list[JoinedExample[Any]] = []
    for ex in examples:
        if ex.vector.featureset != featureset:
            continue  # the feature log carries every feature set's vectors
        try:
            y = check(ex.label.label)
        except RecordRejected as exc:
            if rejected is not None:
                rejected(ex, exc)
            continue
        if y != ex.label.label or type(y) is not type(ex.label.label):
            ex = replace(ex, label=ex.label.model_copy(update={"label": y}))
        out.append(ex)
    return out


def select_window(
    examples: Sequence[JoinedExample[Any]], plan: ReplayPlan
) -> list[JoinedExample[Any]]:
    """The examples a candidate may use, oldest first by event time."""
    ordered = sorted(examples, key=lambda e: (e.event_time, e.event_id))
    if plan.since_event_time is not None:
        ordered = [e for e in ordered if e.event_time >= plan.since_event_time]
    if plan.keep_seconds is not None and ordered:
        cut = ordered[-1].event_time - timedelta(seconds=plan.keep_seconds)
        ordered = [e for e in ordered if e.event_time >= cut]
    if plan.keep_examples is not None:
        ordered = ordered[-plan.keep_examples :]
    return ordered


@dataclass
class FreshCandidate:
    """A model trained from scratch on a window, with its held-out slice: a River
    pipeline (:func:`train_fresh`) or a batch estimator fitted on all but the newest
    slice (:func:`driftline.training.batch.fit_window`)."""

    model: Any
    lineage: LineageTracker
    holdout: list[EvalExample]
    trained_on: int
    """Examples the model learned (those whose ``learn_one`` raised are not counted)."""
    trained_x: list[dict[str, Any]] = field(default_factory=list)
    """The inputs of the :attr:`trained_on` examples (the version's reference statistics)."""
    skipped: int = 0
    """Examples of the training part left out: the model raised on them (skipped,
    logged), or, for an estimator, a value is not a number."""


def split_holdout(n: int, fraction: float, min_eval: int) -> int:
    """How many of ``n`` examples (the newest) are held out: the fraction, at least
    ``min_eval`` when the window allows, and never all of them."""
    if n < 2:
        return 0
    held = max(math.ceil(n * fraction), min(min_eval, n // 2))
    return min(held, n - 1)


def examples_needed(spec: ModelSpec) -> int:
    """The smallest window whose training part (what :func:`split_holdout` leaves)
    holds the spec's ``min_examples`` (the demo's spec: 1,000 to learn from and the
    500 newest held out, so 1,500).
    """
    policy, want = spec.retraining, spec.retraining.min_examples
    n = want
    while n - split_holdout(n, policy.holdout, spec.promotion.min_eval_examples) < want:
        n += 1
    return n


def train_fresh(spec: ModelSpec, window: Sequence[JoinedExample[Any]]) -> FreshCandidate:
    """Learn a new pipeline on all but the newest slice of ``window`` (event-time order).

    The labels are taken as they are (the caller checks them first).  An example
    the pipeline raises on is skipped, logged with its event id and counted in
    :attr:`FreshCandidate.skipped`, so one bad example cannot fail the retrain.
    """
    held = split_holdout(len(window), spec.retraining.holdout, spec.promotion.min_eval_examples)
    train, test = window[: len(window) - held], window[len(window) - held :]
    model = spec.build_pipeline()
    lineage = LineageTracker(featureset=spec.featureset)
    learned: list[dict[str, Any]] = []
    skipped = 0
    for ex in train:
        x = spec.select(ex.vector.values)
        try:
            model.learn_one(x, ex.label.label)
        except Exception as exc:
            # Isolates this example: the candidate learns from the rest of the window.
            skipped += 1
            if skipped <= LOGGED_SKIPS:
                log.warning(
                    "retraining %s skipped event %s: learn_one raised %s: %s",
                    spec.name, ex.event_id, type(exc).__name__, exc,
                    exc_info=skipped == 1,
                )  # fmt: skip
            continue
        learned.append(x)
        lineage.add(ex)
    if skipped > LOGGED_SKIPS:
        log.warning("retraining %s skipped %d examples its pipeline raised on (first %d logged)",
                    spec.name, skipped, LOGGED_SKIPS)  # fmt: skip
    holdout = [
        EvalExample(spec.select(ex.vector.values), ex.label.label, ex.event_time, Prediction())
        for ex in test
    ]
    return FreshCandidate(model, lineage, holdout, len(learned), learned, skipped)
