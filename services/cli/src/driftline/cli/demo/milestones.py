"""What the demo observed, the loop's milestones, and every figure it reports.

:class:`DemoObserver` is fed by the runner (RPC answers, records on the topics)
and is the only source of the live view, the summary and the report: a figure
the demo prints is one it counted here.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from driftline.contracts.messages import (
    DriftEvent,
    DriftKind,
    PredictionRecord,
    RegistryEvent,
    RegistryEventKind,
    RetrainRequest,
)
from driftline.devtools.scenario import Application, ScenarioConfig
from driftline.registry_api.recurring import RESTORE_REASON

__all__ = [
    "CHAMPION",
    "ROLLING",
    "Answer",
    "DemoObserver",
    "Milestone",
    "same_class",
    "version_text",
]

CHAMPION = "champion"
ROLLING = 500
"""Predictions the live rolling accuracy is computed over."""


@dataclass
class Milestone:
    """One step of the loop, when the demo saw it."""

    name: str
    detail: str
    at_event: int
    """Events sent when it was observed."""
    wall_s: float
    """Seconds since the stream started."""


@dataclass
class Answer:
    """The RPC response for one scenario event."""

    index: int
    version: int
    correct: bool


def same_class(predicted: object, label: int) -> bool:
    """Whether a predicted class equals an integer label (``1``, ``1.0``, ``True``, ``"1"``)."""
    if isinstance(predicted, bool):
        return int(predicted) == label
    if isinstance(predicted, int | float):
        return float(predicted) == float(label)
    if isinstance(predicted, str):
        return predicted.strip() == str(label)
    return False


@dataclass
class DemoObserver:
    """Everything the demo counted; every summary figure is computed from this."""

    scenario: ScenarioConfig
    model: str
    started: float = field(default_factory=time.monotonic)
    events_sent: int = 0
    labels_sent: int = 0
    answers: list[Answer] = field(default_factory=list)
    unscored: int = 0
    """Events sent before any champion was announced (no prediction asked)."""
    warmup_unavailable: int = 0
    """Predict calls made before serving first answered and refused (UNAVAILABLE / NOT_FOUND)."""
    failures: list[str] = field(default_factory=list)
    """Failed Predict calls after serving first answered (status and message)."""
    probes: int = 0
    """Extra Predict calls (no event id) sent after the stream to see the new champion serve."""
    champion_at_start: int | None = None
    champions: list[tuple[int, float, str, int]] = field(default_factory=list)
    """Champion changes seen during the run: (version, wall seconds, trigger, events sent)."""
    drift_events: list[tuple[DriftEvent, int, float]] = field(default_factory=list)
    retrains: list[tuple[RetrainRequest, int, float]] = field(default_factory=list)
    registered: list[tuple[RegistryEvent, int, float]] = field(default_factory=list)
    logged_predictions: int = 0
    """Records on ``driftline.predictions`` for this run's event ids (shadow excluded)."""
    logged_versions: dict[int, int] = field(default_factory=dict)
    milestones: list[Milestone] = field(default_factory=list)
    drift_sent_s: float | None = None
    return_sent_s: float | None = None
    """When the first application of the returning concept was sent (``--return-at``)."""
    restorations: list[tuple[int, float, str, int]] = field(default_factory=list)
    """Champion changes whose reason is a recurring concept: (version, wall seconds,
    trigger, events sent)."""
    new_version_first_index: int | None = None
    new_version_served_s: float | None = None
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=ROLLING))
    on_milestone: Callable[[Milestone], None] | None = None

    # -- clocks ---------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the stream started."""
        return time.monotonic() - self.started

    def milestone(self, name: str, detail: str) -> None:
        """Record (and announce) a milestone."""
        m = Milestone(name, detail, self.events_sent, self.now())
        self.milestones.append(m)
        if self.on_milestone is not None:
            self.on_milestone(m)

    # -- what the topics say ----------------------------------------------------------------

    @property
    def current_champion(self) -> int | None:
        """The champion version now (as announced on ``driftline.models``)."""
        return self.champions[-1][0] if self.champions else self.champion_at_start

    @property
    def champion_at_drift(self) -> int | None:
        """The champion when the first post-drift event was sent."""
        if self.drift_sent_s is None:
            return self.current_champion
        return self.champion_at(self.drift_sent_s)

    @property
    def retrain_request(self) -> tuple[RetrainRequest, int, float] | None:
        """The first retraining request after the drift point."""
        if self.drift_sent_s is None:
            return None
        after = [r for r in self.retrains if r[2] >= self.drift_sent_s]
        return after[0] if after else None

    @property
    def new_champion(self) -> tuple[int, float, str, int] | None:
        """The champion that answered the drift (version, when, trigger, events): the first
        one promoted for the retraining request; when there is none (the loop did not
        close), the first champion change after the drift point.

        A scheduled snapshot promoted around the drift learned (almost) nothing of
        the new concept: it is listed with the champion changes, not counted as the
        answer.
        """
        if self.drift_sent_s is None:
            return None
        after = [c for c in self.champions if c[1] > self.drift_sent_s]
        requested = {r.request_id for r, _, at in self.retrains if at >= self.drift_sent_s}
        for change in after:
            if change[2] in requested:
                return change
        old = self.champion_at_drift
        for change in after:
            if change[0] != old:
                return change
        return None

    @property
    def restored(self) -> tuple[int, float, str, int] | None:
        """The restoration that answered the returning concept: the first champion change
        after the return with a recurring-concept reason (None without one, or no return)."""
        if self.return_sent_s is None:
            return None
        after = [r for r in self.restorations if r[1] > self.return_sent_s]
        return after[0] if after else None

    @property
    def old_champions(self) -> set[int]:
        """The versions that were champion before the drift (learned the returning rule)."""
        cut = self.drift_sent_s if self.drift_sent_s is not None else math.inf
        old = {v for v, at, _, _ in self.champions if at <= cut}
        return old | ({self.champion_at_start} if self.champion_at_start is not None else set())

    def champion_at(self, wall_s: float) -> int | None:
        """The champion at ``wall_s`` seconds into the stream."""
        before = [v for v, at, _, _ in self.champions if at <= wall_s]
        return before[-1] if before else self.champion_at_start

    @property
    def new_champion_retrained(self) -> bool:
        """Whether the new champion is the candidate trained for a retraining request."""
        new = self.new_champion
        return new is not None and new[2] in {r.request_id for r, _, _ in self.retrains}

    def on_models(self, event: RegistryEvent, history: bool) -> None:
        """A ``driftline.models`` record (``history``: written before the demo started)."""
        if event.model_name != self.model:
            return
        if event.kind in (RegistryEventKind.ALIAS_SET, RegistryEventKind.ROLLED_BACK):
            if event.alias != CHAMPION:
                return
            if history:
                self.champion_at_start = event.version
                return
            first = self.current_champion is None
            change = (event.version, self.now(), event.trigger or "", self.events_sent)
            self.champions.append(change)
            if event.reason.startswith(RESTORE_REASON):
                self.restorations.append(change)
                self.milestone(
                    "old champion restored",
                    f"v{event.version} is champion again (trigger {event.trigger or '-'}): "
                    f"{event.reason}",
                )
            elif first:
                self.milestone("first champion", f"v{event.version} ({event.reason or 'promoted'})")
            elif self.drift_sent_s is not None:
                self.milestone(
                    "promoted",
                    f"v{event.version} became champion (trigger {event.trigger or '-'}): "
                    f"{event.reason}",
                )
            else:
                self.milestone("champion changed", f"v{event.version} ({event.reason})")
        elif event.kind is RegistryEventKind.REGISTERED and not history:
            self.registered.append((event, self.events_sent, self.now()))
            if (
                self.retrains
                and event.lineage is not None
                and event.lineage.trigger_id in {r.request_id for r, _, _ in self.retrains}
            ):
                self.milestone("candidate registered", f"v{event.version} for the retrain request")

    def on_drift(self, event: DriftEvent) -> None:
        """A ``driftline.drift`` record."""
        if event.model_name != self.model:
            return
        self.drift_events.append((event, self.events_sent, self.now()))
        detection = self.detection
        if event.kind is DriftKind.CONCEPT and detection is not None and detection[0] is event:
            self.milestone(
                "drift detected",
                f"{event.kind.value} drift by {event.detector} at event {self.events_sent} "
                f"({event.statistic:.3g} > {event.threshold:.3g}, {event.severity})",
            )

    def on_retrain(self, request: RetrainRequest) -> None:
        """A ``driftline.retrain`` record."""
        if request.model_name != self.model:
            return
        self.retrains.append((request, self.events_sent, self.now()))
        if len(self.retrains) == 1:
            self.milestone("retrain requested", f"{request.request_id}: {request.reason}")

    def on_prediction(self, record: PredictionRecord, event_ids: str) -> None:
        """A ``driftline.predictions`` record; only this run's (prefix ``event_ids``) count."""
        if record.shadow or record.event_id is None or not record.event_id.startswith(event_ids):
            return
        self.logged_predictions += 1
        self.logged_versions[record.model_version] = (
            self.logged_versions.get(record.model_version, 0) + 1
        )

    # -- what the RPCs say ---------------------------------------------------------------

    def on_answer(self, app: Application, version: int, predicted: object) -> None:
        """Serving answered the prediction for ``app``."""
        correct = same_class(predicted, app.label)
        self.answers.append(Answer(app.index, version, correct))
        self.recent.append(correct)
        if len(self.answers) == 1:
            self.milestone("serving answered", f"first prediction by v{version}")
        self._check_new_version(version, app.index)

    def on_probe(self, version: int) -> None:
        """A probe after the stream was answered by ``version``."""
        self._check_new_version(version, None)

    def _check_new_version(self, version: int, index: int | None) -> None:
        new = self.new_champion
        if new is None or version != new[0] or self.new_version_served_s is not None:
            return
        self.new_version_served_s = self.now()
        self.new_version_first_index = index
        where = f"event {index}" if index is not None else "a probe after the stream"
        self.milestone("new champion serving", f"v{version} answered {where}")

    # -- derived figures -----------------------------------------------------------------

    @property
    def detection(self) -> tuple[DriftEvent, int, float] | None:
        """The first concept-drift detection at or after the drift point."""
        if self.drift_sent_s is None:
            return None
        for item in self.drift_events:
            if item[0].kind is DriftKind.CONCEPT and item[2] >= self.drift_sent_s:
                return item
        return None

    @property
    def false_alarms(self) -> list[DriftEvent]:
        """Concept-drift detections before the drift point."""
        cut = self.drift_sent_s if self.drift_sent_s is not None else math.inf
        return [e for e, _, at in self.drift_events if e.kind is DriftKind.CONCEPT and at < cut]

    @property
    def rolling_accuracy(self) -> float | None:
        """Accuracy of the last :data:`ROLLING` answered predictions."""
        return sum(self.recent) / len(self.recent) if self.recent else None

    def accuracy(self, lo: int, hi: int | None) -> tuple[float | None, int]:
        """Accuracy (and count) of answered events with ``lo <= index < hi``."""
        picked = [a.correct for a in self.answers if a.index >= lo and (hi is None or a.index < hi)]
        return (sum(picked) / len(picked) if picked else None), len(picked)

    def phases(self) -> dict[str, tuple[float | None, int]]:
        """Accuracy before the drift, during it (until the new champion answers), after."""
        drift = self.scenario.drift_at
        switch = self.new_version_first_index
        return {
            "before": self.accuracy(0, drift),
            "during": self.accuracy(drift, switch),
            "after": self.accuracy(switch, None) if switch is not None else (None, 0),
        }

    def problems(self) -> list[str]:
        """Why the loop did not close (empty when it did)."""
        out: list[str] = []
        if not self.answers:
            out.append("serving never answered a prediction")
        if self.detection is None:
            out.append("no concept drift was detected after the drift point")
        if self.detection is not None and self.retrain_request is None:
            out.append("no retraining was requested for the drift")
        if self.new_champion is None:
            out.append("no new champion was promoted after the drift")
        else:
            if self.retrain_request is not None and not self.new_champion_retrained:
                out.append("the new champion is not the retraining request's candidate")
            if self.new_version_served_s is None:
                out.append("serving never answered with the new champion")
        if self.failures:
            out.append(f"{len(self.failures)} prediction request(s) failed")
        if self.scenario.return_at is not None:
            restored = self.restored
            if restored is None:
                out.append("the old champion was not restored after the concept returned")
            elif restored[0] not in self.old_champions:
                out.append(
                    f"v{restored[0]} was restored, not a champion from before the drift "
                    f"({', '.join(version_text(v) for v in sorted(self.old_champions))})"
                )
        return out

    def summary(self) -> dict[str, Any]:
        """The run's figures, as printed and written to the report."""
        det = self.detection
        new = self.new_champion
        drift_s = self.drift_sent_s
        phases = self.phases()
        return {
            "events sent": self.events_sent,
            "labels sent": self.labels_sent,
            "predictions answered": len(self.answers),
            "predictions logged on driftline.predictions": self.logged_predictions,
            "events before any champion (not scored)": self.unscored,
            "refused while serving warmed up": self.warmup_unavailable,
            "failed requests": len(self.failures),
            "probe requests after the stream": self.probes,
            "accuracy before drift": _pct(phases["before"]),
            "accuracy during drift": _pct(phases["during"]),
            "accuracy after new champion": _pct(phases["after"]),
            "champion at drift": version_text(self.champion_at_drift),
            "new champion": version_text(new[0]) if new else "none",
            "new champion trigger": (new[2] or "-") if new else "-",
            "new champion from the retrain request": "yes" if self.new_champion_retrained else "no",
            "drift detected at event": det[1] if det else "not detected",
            "detection delay (events)": det[1] - self.scenario.drift_at if det else "n/a",
            "false alarms before the drift": len(self.false_alarms),
            "retrain requests": len(self.retrains),
            "drift → retrain requested (s)": (
                f"{self.retrain_request[2] - drift_s:.1f}"
                if self.retrain_request is not None and drift_s is not None
                else "n/a"
            ),
            "drift → new champion promoted (s)": (
                f"{new[1] - drift_s:.1f}" if new and drift_s is not None else "n/a"
            ),
            "drift → new champion serving (s)": (
                f"{self.new_version_served_s - drift_s:.1f}"
                if self.new_version_served_s is not None and drift_s is not None
                else "n/a"
            ),
            **self._return_summary(),
        }

    def _return_summary(self) -> dict[str, Any]:
        """The recurring concept's figures (none without ``--return-at``)."""
        back = self.scenario.return_at
        if back is None:
            return {}
        restored = self.restored
        sent = self.return_sent_s
        return {
            "concept returns at event": back,
            "old champion restored": version_text(restored[0]) if restored else "none",
            "restored at event (events after the return)": (
                f"{restored[3]} ({restored[3] - back})" if restored else "n/a"
            ),
            "return → old champion restored (s)": (
                f"{restored[1] - sent:.1f}" if restored and sent is not None else "n/a"
            ),
            "accuracy after the return": _pct(self.accuracy(back, None)),
        }


def _pct(value: tuple[float | None, int]) -> str:
    acc, n = value
    return f"{acc:.3f} over {n} predictions" if acc is not None else "n/a (no predictions)"


def version_text(version: int | None) -> str:
    """``v3``, or ``none`` when there is no version."""
    return f"v{version}" if version is not None else "none"
