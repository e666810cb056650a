"""What ops saw of the demo: the alerts that fired and resolved, and the loop's trace.

After the loop closes, the demo asks the local ops stack (not its own bookkeeping):
Alertmanager's notifications, as the alert sink kept them, give every alert episode
that started during the run; Jaeger's query API gives the trace of the retraining
request (found by its ``driftline.retrain.id``), with the traces its spans link to.
The loop trace counts as shown when it holds spans of at least
:data:`LOOP_MIN_SERVICES` services.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from driftline.cli.ops_views import (
    AlertEpisode,
    JaegerQuery,
    OpsUnreachable,
    Trace,
    alert_episodes,
    find_traces,
    gather_loop,
)
from driftline.devtools.alert_sink import read_notifications

__all__ = ["LOOP_MIN_SERVICES", "WATCHED_ALERTS", "OpsOutcome", "collect_ops"]

LOOP_MIN_SERVICES = 5
"""Services the loop's trace must hold for the demo to call it shown."""

WATCHED_ALERTS = ("DriftDetected", "AccuracyBelowFloor")
"""The alerts the demo waits for before it reports: fired, and resolved (both resolve
once the retrained champion is promoted)."""


@dataclass
class OpsOutcome:
    """The ops stack's view of one demo run."""

    alertmanager_url: str
    jaeger_url: str
    alerts: list[AlertEpisode] = field(default_factory=list)
    loop: Trace | None = None
    problems: list[str] = field(default_factory=list)
    drift_alert_s: float | None = None
    """Seconds from the drift detection to ``DriftDetected`` reaching the alert sink."""

    @property
    def loop_url(self) -> str | None:
        """Jaeger's page of the loop's trace."""
        return f"{self.jaeger_url}/trace/{self.loop.trace_ids[0]}" if self.loop else None

    @property
    def loop_shown(self) -> bool:
        """Whether the loop's trace holds at least :data:`LOOP_MIN_SERVICES` services."""
        return self.loop is not None and len(self.loop.services) >= LOOP_MIN_SERVICES

    def summary(self) -> dict[str, str]:
        """Rows for the demo's summary."""
        fired = ", ".join(
            f"{e.name} ({'resolved' if e.resolved else 'firing'})" for e in self.alerts
        )
        rows = {
            "alerts fired (Alertmanager)": fired or "none",
            "drift → DriftDetected at Alertmanager's receiver (s)": (
                f"{self.drift_alert_s:.1f}" if self.drift_alert_s is not None else "-"
            ),
            "loop trace services (Jaeger)": (
                f"{len(self.loop.services)}: {', '.join(self.loop.services)}" if self.loop else "-"
            ),
            "loop trace": self.loop_url or "-",
        }
        return rows

    def markdown(self) -> str:
        """The report's section: alert episodes and the loop's trace."""
        out = ["## What ops saw", ""]
        out.append(f"Alerts, from the notifications of Alertmanager ({self.alertmanager_url}):")
        out.append("")
        if self.alerts:
            out.append("| alert | severity | fired (UTC) | resolved (UTC) | summary |")
            out.append("|---|---|---|---|---|")
            for e in self.alerts:
                resolved = e.resolved.strftime("%H:%M:%S") if e.resolved else "still firing"
                out.append(
                    f"| {e.identity} | {e.severity} | {e.started.strftime('%H:%M:%S')} "
                    f"| {resolved} | {e.summary} |"
                )
        else:
            out.append("No alert fired.")
        out.append("")
        if self.drift_alert_s is not None:
            out.append(
                f"Drift detected → DriftDetected at the receiver: {self.drift_alert_s:.1f} s."
            )
            out.append("")
        if self.loop is not None:
            out.append(
                f"The loop's trace ([Jaeger]({self.loop_url})): {len(self.loop.spans)} spans "
                f"from {len(self.loop.services)} services ({', '.join(self.loop.services)})."
            )
            out.append("")
            out.append("```")
            out.extend(self.loop.tree_lines())
            out.append("```")
        else:
            out.append("The loop's trace was not found in Jaeger.")
        for p in self.problems:
            out.append("")
            out.append(f"- {p}")
        out.append("")
        return "\n".join(out)


def _watched(alerts: list[AlertEpisode]) -> list[AlertEpisode]:
    """The episodes of :data:`WATCHED_ALERTS` that the demo's concept drift causes."""
    return [
        e
        for e in alerts
        if e.name in WATCHED_ALERTS
        and (e.name != "DriftDetected" or e.labels.get("kind") == "concept")
    ]


def _loop_trace(jaeger: JaegerQuery, retrain_id: str) -> Trace | None:
    found = find_traces(jaeger, retrain_id, lookback="6h")
    return gather_loop(jaeger, found) if found else None


def collect_ops(
    *,
    alertmanager_url: str,
    jaeger_url: str,
    notifications: Path,
    started: datetime,
    retrain_id: str | None,
    detected_at: datetime | None,
    wait_s: float,
    progress: Callable[[str], None] = lambda line: None,
) -> OpsOutcome:
    """Ask the ops stack what it saw since ``started``, waiting up to ``wait_s`` for
    the watched alerts to fire and resolve and for the loop's trace to hold
    :data:`LOOP_MIN_SERVICES` services (span exporters send in batches)."""
    outcome = OpsOutcome(alertmanager_url, jaeger_url)
    jaeger = JaegerQuery(jaeger_url)
    deadline = time.monotonic() + wait_s
    said = ""
    while True:
        episodes = alert_episodes(read_notifications(notifications))
        outcome.alerts = [e for e in episodes if e.started >= started]
        if retrain_id is not None and not outcome.loop_shown:
            try:
                outcome.loop = _loop_trace(jaeger, retrain_id)
            except OpsUnreachable as exc:
                outcome.problems.append(str(exc))
                break
        # Both watched alerts resolve once the new champion serves. The demo's drift is
        # a concept drift: other kinds' episodes (a prediction drift seen after the last
        # promotion) may rightly still fire.
        watched = _watched(outcome.alerts)
        alerts_done = {e.name for e in watched} == set(WATCHED_ALERTS) and all(
            e.resolved is not None for e in watched
        )
        trace_done = retrain_id is None or outcome.loop_shown
        if (alerts_done and trace_done) or time.monotonic() > deadline:
            break
        waiting = ", ".join(
            [*(["alerts to fire and resolve"] if not alerts_done else []),
             *(["the loop's spans"] if not trace_done else [])]
        )  # fmt: skip
        if waiting != said:
            progress(f"waiting up to {wait_s:.0f} s for {waiting} (ops stack)")
            said = waiting
        time.sleep(2.0)
    # The demo's detection is a concept drift: time the alert of that kind (a data
    # drift of the same run may have fired earlier, under its own labels).
    drifts = [e for e in outcome.alerts if e.name == "DriftDetected"]
    concept = [e for e in drifts if e.labels.get("kind") == "concept"]
    drift_alert = next(iter(concept or drifts), None)
    if drift_alert is not None and detected_at is not None:
        outcome.drift_alert_s = (drift_alert.notified - detected_at).total_seconds()
    for name in WATCHED_ALERTS:
        episodes = [e for e in _watched(outcome.alerts) if e.name == name]
        if not episodes:
            outcome.problems.append(f"{name} did not reach Alertmanager's receiver")
        elif any(e.resolved is None for e in episodes):
            outcome.problems.append(f"{name} fired but had not resolved when the demo reported")
    if retrain_id is not None and not outcome.loop_shown:
        held = len(outcome.loop.services) if outcome.loop else 0
        outcome.problems.append(
            f"the loop's trace holds {held} services in Jaeger, fewer than {LOOP_MIN_SERVICES}"
        )
    return outcome
