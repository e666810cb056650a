"""A seeded stream of loan applications with an abrupt concept drift and delayed labels.

The applications are River's ``synth.Agrawal`` records (the fields of the
``loans`` feature set).  Before :attr:`ScenarioConfig.drift_at` their labels
follow Agrawal's classification function :attr:`ScenarioConfig.function_before`;
from that index on, :attr:`ScenarioConfig.function_after`.  The feature
distribution does not change — only the concept does — so a model that learned
the old rule starts making mistakes at once, and only labels reveal it.  With
:attr:`ScenarioConfig.return_at` the old rule comes back at that index (a
recurring concept: the champion that learned it is still in the registry).

The default pair (2 → 0) was chosen by measurement: a Hoeffding adaptive tree
(the demo's model spec) scores ~0.99 on function 2, falls to ~0.65 when the
rule becomes function 0, and a fresh tree trained on 1,000 examples of the new
rule scores ~0.99 again — a drop and a recovery that are plain on a plot.

Everything here is pure: the same configuration gives the same stream, event
for event; event times are ``start + index * interval``.

>>> from datetime import UTC, datetime
>>> cfg = ScenarioConfig(events=5, drift_at=3, label_delay=2, seed=1,
...                      start=datetime(2026, 1, 1, tzinfo=UTC))
>>> [(s.kind, s.application.index) for s in schedule(cfg)]
... # doctest: +NORMALIZE_WHITESPACE
[('event', 0), ('event', 1), ('event', 2), ('label', 0), ('event', 3), ('label', 1),
 ('event', 4), ('label', 2), ('label', 3), ('label', 4)]
>>> [a.concept for a in applications(cfg)]
[2, 2, 2, 0, 0]
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from river.datasets import synth

from driftline.contracts.messages import FeatureValue, RawEvent, RawLabel

__all__ = [
    "AGRAWAL_FUNCTIONS",
    "Application",
    "ScenarioConfig",
    "Step",
    "applications",
    "schedule",
]

AGRAWAL_FUNCTIONS = range(10)
"""Agrawal's classification functions (0-9)."""


@dataclass(frozen=True)
class ScenarioConfig:
    """The knobs of a scenario; every field has a default that makes a sensible demo."""

    events: int = 12_000
    """How many applications the stream holds."""
    drift_at: int = 6_000
    """Index of the first application labelled by the new rule (``events`` or more: no drift)."""
    label_delay: int = 200
    """A label is emitted right after the application this many events later (0: at once)."""
    seed: int = 42
    """Seeds the applications, the customers and the event ids' order; same seed, same stream."""
    customers: int = 2_000
    """Size of the customer pool entity ids are drawn from."""
    zipf_s: float = 1.1
    """Zipf exponent of customer reuse: customer of rank r is picked with weight 1/r**s."""
    function_before: int = 2
    """Agrawal classification function before the drift."""
    function_after: int = 0
    """Agrawal classification function from ``drift_at`` on."""
    return_at: int | None = None
    """Index of the first application labelled by ``function_before`` again (a recurring
    concept); None: ``function_after`` to the end."""
    featureset: str = "loans"
    """The feature set named on every event."""
    start: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    """Event time of application 0 (timezone-aware)."""
    interval: timedelta = timedelta(milliseconds=10)
    """Event-time spacing between consecutive applications."""
    event_id_prefix: str = "e"
    """Event ids are ``<prefix>-<seed>-<index, 7 digits>``."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.events < 0:
            problems.append(f"events must be >= 0 (got {self.events})")
        if self.drift_at < 0:
            problems.append(f"drift_at must be >= 0 (got {self.drift_at})")
        if self.label_delay < 0:
            problems.append(f"label_delay must be >= 0 (got {self.label_delay})")
        if self.customers < 1:
            problems.append(f"customers must be >= 1 (got {self.customers})")
        if self.zipf_s < 0:
            problems.append(f"zipf_s must be >= 0 (got {self.zipf_s})")
        for name in ("function_before", "function_after"):
            value = getattr(self, name)
            if value not in AGRAWAL_FUNCTIONS:
                problems.append(f"{name} must be an Agrawal function 0-9 (got {value})")
        if self.return_at is not None and self.return_at <= self.drift_at:
            problems.append(
                f"return_at must come after drift_at (got {self.return_at} <= {self.drift_at})"
            )
        if self.start.tzinfo is None:
            problems.append("start must be timezone-aware")
        if self.interval <= timedelta(0):
            problems.append(f"interval must be positive (got {self.interval})")
        if problems:
            raise ValueError("invalid scenario: " + "; ".join(problems))

    @property
    def has_drift(self) -> bool:
        """Whether the concept changes inside the stream."""
        return self.drift_at < self.events and self.function_before != self.function_after


@dataclass(frozen=True)
class Application:
    """One loan application and its ground truth."""

    index: int
    """Position in the stream (0-based)."""
    event_id: str
    entity_id: str
    event_time: datetime
    features: dict[str, FeatureValue]
    label: int
    """1: the loan is accepted under the rule in force (``concept``)."""
    concept: int
    """The Agrawal function that labelled it."""
    after_drift: bool
    """Whether it lies at or past the drift point, and before a return (labelled by the
    post-drift rule)."""
    returned: bool = False
    """Whether it lies at or past :attr:`ScenarioConfig.return_at` (the old rule again)."""

    def raw_event(self, featureset: str = "loans") -> RawEvent:
        """The ``driftline.events`` record of this application."""
        return RawEvent(
            event_id=self.event_id,
            entity_id=self.entity_id,
            timestamp=self.event_time,
            featureset=featureset,
            features=dict(self.features),
        )

    def raw_label(self, at: datetime | None = None) -> RawLabel:
        """The ``driftline.labels`` record of this application, stamped ``at`` (default:
        its own event time)."""
        return RawLabel(
            event_id=self.event_id,
            entity_id=self.entity_id,
            timestamp=at or self.event_time,
            label=self.label,
        )


@dataclass(frozen=True)
class Step:
    """One record to produce, in order: an application's event, or a later label."""

    kind: Literal["event", "label"]
    application: Application
    at_index: int
    """The event index this step belongs after: for an event its own index, for a label
    the index of the event it follows (``index + label_delay``, capped at the last one)."""


def _customer_picker(rng: random.Random, customers: int, s: float) -> Iterator[str]:
    cumulative = list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, customers + 1)))
    total = cumulative[-1]
    # Rank -> id through a seeded shuffle, so the busiest customer is not always customer-1.
    ids = [f"customer-{n}" for n in range(1, customers + 1)]
    rng.shuffle(ids)
    while True:
        yield ids[bisect.bisect_left(cumulative, rng.random() * total)]


def applications(config: ScenarioConfig) -> Iterator[Application]:
    """The applications of the scenario, in order (lazily; ``config.events`` of them)."""
    before = iter(synth.Agrawal(classification_function=config.function_before, seed=config.seed))
    after = iter(synth.Agrawal(classification_function=config.function_after, seed=config.seed + 1))
    picker = _customer_picker(random.Random(config.seed), config.customers, config.zipf_s)
    back = config.events if config.return_at is None else config.return_at
    for index in range(config.events):
        drifted = config.drift_at <= index < back
        x, y = next(after if drifted else before)
        yield Application(
            index=index,
            event_id=f"{config.event_id_prefix}-{config.seed}-{index:07d}",
            entity_id=next(picker),
            event_time=config.start + index * config.interval,
            features=dict(x),
            label=int(y),
            concept=config.function_after if drifted else config.function_before,
            after_drift=drifted,
            returned=index >= back,
        )


def schedule(config: ScenarioConfig) -> Iterator[Step]:
    """Events and labels in the order to produce them.

    Event ``i`` comes first; the label of event ``j`` comes right after event
    ``j + label_delay``; labels still pending when the stream ends follow the
    last event, in order.
    """
    pending: deque[Application] = deque()
    last = config.events - 1
    for app in applications(config):
        yield Step("event", app, app.index)
        pending.append(app)
        while pending and pending[0].index + config.label_delay <= app.index:
            yield Step("label", pending.popleft(), app.index)
    while pending:
        yield Step("label", pending.popleft(), last)
