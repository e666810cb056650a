"""``driftline demo``: the whole loop on a loan stream with a known concept drift.

The demo streams :mod:`driftline.scenario` applications to ``driftline.events``
(labels follow on ``driftline.labels`` after a delay), asks serving's
``Predictor.Predict`` for each one, and watches ``driftline.drift``,
``driftline.retrain``, ``driftline.models`` and ``driftline.predictions`` for the
loop's milestones.  Every figure it prints is counted from what it observed:
the RPC responses (compared with the labels it sent) and the records on those
topics.  It starts whatever part of the platform is not running, stops only what
it started, and exits 1 when the loop did not close.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import time
import uuid
from asyncio import FIRST_COMPLETED
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel, ValidationError
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table

from driftline.cli.context import console, err_console, progress, state
from driftline.cli.supervisor import SERVICE_NAMES, ServiceProcess
from driftline.contracts.messages import (
    DriftEvent,
    DriftKind,
    PredictionRecord,
    RegistryEvent,
    RegistryEventKind,
    RetrainRequest,
    prediction_records,
)
from driftline.contracts.topics import DRIFT, EVENTS, LABELS, MODELS, PREDICTIONS, RETRAIN
from driftline.infra import InfraError, LocalComponent, LocalPlatform, free_ports
from driftline.kafkaio import make_consumer, make_producer, provision_topics, send_model
from driftline.scenario import Application, ScenarioConfig, schedule
from driftline.settings import PlatformSettings
from driftline.v1 import (
    common_pb2,
    feature_store_pb2,
    feature_store_pb2_grpc,
    predictor_pb2,
    predictor_pb2_grpc,
)

__all__ = [
    "DemoObserver",
    "DemoOptions",
    "demo",
    "demo_models_dir",
    "demo_service_env",
    "isolated_env",
    "report_summary",
    "write_report",
]

CHAMPION = "champion"
ROLLING = 500
"""Predictions the live rolling accuracy is computed over."""
PLOT_WINDOW = 200
"""Events per point of the report's rolling-accuracy curve."""


@dataclass(frozen=True)
class DemoOptions:
    """The knobs of one demo run."""

    events: int = 12_000
    rate: float = 100.0
    drift_at: int = 6_000
    label_delay: int = 200
    seed: int = 42
    model: str = "loans"
    concurrency: int = 32
    report: Path = Path(".driftline/demo/report.md")
    keep_running: bool = False
    timeout_s: float = 900.0
    settle_s: float = 20.0
    service_timeout_s: float = 90.0


# -- what the services the demo starts are tuned to ------------------------------------------


def demo_models_dir(models_dir: Path, model: str) -> Path | None:
    """The directory training must load specs from for the demo of ``model``.

    ``None`` when ``models_dir`` itself holds the spec (the River model: training's
    defaults are right).  A spec in a subdirectory (``examples/models/batch/`` holds
    ``loans-gbm``) is trained only when training is pointed there, so that the River
    demo's training never fits it; that subdirectory is returned.  ``None`` too when
    no spec of that name is found (serving may still know the model).
    """
    import yaml

    def holds(directory: Path) -> bool:
        # Only the names are read (validating a spec imports its framework): training
        # reports a broken spec when it loads it.
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and data.get("name") == model:
                return True
        return False

    if not models_dir.is_dir() or holds(models_dir):
        return None
    for sub in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if holds(sub):
            return sub.resolve()  # the services the demo starts may run elsewhere
    return None


def demo_service_env(
    options: DemoOptions, min_examples: int = 1000, models_dir: Path | None = None
) -> dict[str, str]:
    """Settings (as ``DRIFTLINE_*`` variables) for services the demo starts itself.

    The defaults are sized for a long-running platform (a snapshot every 5,000
    labels, 3,600 labels of detector warm-up); a 12,000-event demo needs the
    first champion and the warm-up done well before the drift point, and no
    promotion of a scheduled snapshot just after it.  The
    retraining itself needs no tuning: monitoring asks at detection and training
    holds the request until the window after the drift holds enough labelled
    examples.  Variables already set in the environment win.  Services that were
    already running keep their settings.
    """
    # Each promotion re-baselines the monitor's error detector (a warm-up of
    # ``warmup`` outcomes after a lag of 400), so the last snapshot before the drift
    # comes early enough for it to be watching again at the drift, and the next one
    # well after the detection (by then a retrain request is pending and training
    # keeps that snapshot a challenger).
    snapshot_every = max(min_examples, min(5000, round(0.6 * options.drift_at)))
    warmup = max(200, min(3600, options.drift_at // 6))
    env = {
        "DRIFTLINE_TRAINING__SNAPSHOT_EVERY": str(snapshot_every),
        "DRIFTLINE_MONITORING__CONCEPT_WARMUP": str(warmup),
    }
    if models_dir is not None:
        # Training loads only the demo's model (see demo_models_dir).
        env["DRIFTLINE_TRAINING__MODELS_DIR"] = str(models_dir)
    return env


def isolated_env(
    *,
    bootstrap_servers: str,
    redis_host: str,
    redis_port: int,
    state_dir: Path,
    ports: Callable[[int], list[int]] = free_ports,
) -> dict[str, str]:
    """``DRIFTLINE_*`` variables for a demo on a broker and Redis of its own (tests, benches).

    Every service gets ports from ``ports(n)`` (n free ports) and its state under
    ``state_dir``; ``DRIFTLINE_*`` variables of the calling environment are dropped
    so that nothing of another platform leaks in.
    """
    admin = ports(6)
    features_grpc, registry_grpc, serving_grpc = ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=bootstrap_servers,
        DRIFTLINE_REDIS__HOST=redis_host,
        DRIFTLINE_REDIS__PORT=str(redis_port),
        DRIFTLINE_INFRA__STATE_DIR=str(state_dir),
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
        DRIFTLINE_INGESTION__ADMIN__PORT=str(admin[0]),
        DRIFTLINE_FEATURES__ADMIN__PORT=str(admin[1]),
        DRIFTLINE_FEATURES__GRPC_PORT=str(features_grpc),
        DRIFTLINE_TRAINING__ADMIN__PORT=str(admin[2]),
        DRIFTLINE_TRAINING__REGISTRY_TARGET=f"127.0.0.1:{registry_grpc}",
        DRIFTLINE_REGISTRY__ADMIN__PORT=str(admin[3]),
        DRIFTLINE_REGISTRY__GRPC_PORT=str(registry_grpc),
        DRIFTLINE_REGISTRY__ARTIFACT_DIR=str(state_dir / "artifacts"),
        DRIFTLINE_SERVING__ADMIN__PORT=str(admin[4]),
        DRIFTLINE_SERVING__GRPC_PORT=str(serving_grpc),
        DRIFTLINE_SERVING__FEATURES_TARGET=f"127.0.0.1:{features_grpc}",
        DRIFTLINE_SERVING__REGISTRY_TARGET=f"127.0.0.1:{registry_grpc}",
        DRIFTLINE_MONITORING__ADMIN__PORT=str(admin[5]),
    )
    return env


def report_summary(report: str) -> dict[str, str]:
    """The figure -> value rows of a demo report's Summary table."""
    section = report.split("## Summary", 1)[1].split("## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| (.+?) \|$", section, flags=re.MULTILINE)
    return {k: v for k, v in rows if k not in ("figure", "---")}


# -- observation --------------------------------------------------------------------------


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


def value_pb(value: object) -> common_pb2.Value:
    """A ``driftline.v1.Value`` of a feature value (unset for ``None``)."""
    if value is None:
        return common_pb2.Value()
    if isinstance(value, bool):
        return common_pb2.Value(bool_value=value)
    if isinstance(value, int):
        return common_pb2.Value(int64_value=value)
    if isinstance(value, float):
        return common_pb2.Value(double_value=value)
    return common_pb2.Value(string_value=str(value))


def _as_label(value: common_pb2.Value) -> int | float | str | bool | None:
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    raw: int | float | str | bool = getattr(value, kind)
    return raw


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
            self.champions.append(
                (event.version, self.now(), event.trigger or "", self.events_sent)
            )
            if first:
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
            "champion at drift": _ver(self.champion_at_drift),
            "new champion": _ver(new[0]) if new else "none",
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
        }


def _pct(value: tuple[float | None, int]) -> str:
    acc, n = value
    return f"{acc:.3f} over {n} predictions" if acc is not None else "n/a (no predictions)"


def _ver(version: int | None) -> str:
    return f"v{version}" if version is not None else "none"


# -- the live view ---------------------------------------------------------------------


def live_view(obs: DemoObserver, total_events: int) -> RenderableType:
    """The progress table and the milestones so far."""
    progress_table = Table.grid(padding=(0, 2))
    progress_table.add_column(style="bold")
    progress_table.add_column()
    acc = obs.rolling_accuracy
    progress_table.add_row(
        "events", f"{obs.events_sent:,} / {total_events:,}  (drift at {obs.scenario.drift_at:,})"
    )
    progress_table.add_row("labels", f"{obs.labels_sent:,}")
    progress_table.add_row(
        "predictions", f"{len(obs.answers):,} answered, {len(obs.failures)} failed"
    )
    progress_table.add_row(f"accuracy (last {ROLLING})", f"{acc:.3f}" if acc is not None else "-")
    progress_table.add_row("champion", _ver(obs.current_champion))
    progress_table.add_row("elapsed", f"{obs.now():.0f}s")
    milestones = Table(title="milestones", show_edge=False, expand=False)
    milestones.add_column("t (s)", justify="right")
    milestones.add_column("event", justify="right")
    milestones.add_column("what")
    milestones.add_column("detail", overflow="fold")
    for m in obs.milestones[-12:]:
        milestones.add_row(f"{m.wall_s:.1f}", f"{m.at_event:,}", m.name, m.detail)
    return Group(progress_table, milestones)


# -- the report --------------------------------------------------------------------------


def write_report(obs: DemoObserver, path: Path, options: DemoOptions) -> tuple[Path, Path]:
    """Write the Markdown report and its PNG plot next to it; return both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_suffix(".png")
    answers = sorted(obs.answers, key=lambda a: a.index)
    xs: list[int] = []
    ys: list[float] = []
    window: deque[bool] = deque(maxlen=PLOT_WINDOW)
    for a in answers:
        window.append(a.correct)
        if len(window) == PLOT_WINDOW or a is answers[-1]:
            xs.append(a.index)
            ys.append(sum(window) / len(window))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(xs, ys, color="tab:blue", linewidth=1.2, label=f"accuracy (last {PLOT_WINDOW})")
    ax.axvline(obs.scenario.drift_at, color="tab:red", linestyle="-", label="concept drift")
    det = obs.detection
    if det is not None:
        ax.axvline(det[1], color="tab:orange", linestyle="--", label="drift detected")
    if obs.new_version_first_index is not None:
        ax.axvline(
            obs.new_version_first_index,
            color="tab:green",
            linestyle="--",
            label=f"new champion serving (v{obs.new_champion[0] if obs.new_champion else '?'})",
        )
    ax.set_xlabel("event index")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(0, max(obs.scenario.events, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(f"driftline demo: {obs.scenario.events:,} events, seed {obs.scenario.seed}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)

    problems = obs.problems()
    lines = [
        "# Driftline demo report",
        "",
        f"Run at {datetime.now(UTC).isoformat(timespec='seconds')}: {options.events:,} events at "
        f"{options.rate:g}/s, concept drift at event {options.drift_at:,} "
        f"(Agrawal function {obs.scenario.function_before} → {obs.scenario.function_after}), "
        f"labels {options.label_delay} events late, seed {options.seed}, model `{obs.model}`.",
        "",
        "**Loop closed.**" if not problems else "**Loop did not close:** " + "; ".join(problems),
        "",
        f"![rolling accuracy]({png.name})",
        "",
        "## Summary",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in obs.summary().items()),
        "",
        "Accuracy compares each `Predict` response with the label the demo sent for that event.",
        '"During" runs from the drift point to the first event answered by the new champion.',
        "",
        "## Milestones",
        "",
        "| t (s) | events sent | milestone | detail |",
        "|---:|---:|---|---|",
        *(
            f"| {m.wall_s:.1f} | {m.at_event} | {m.name} | {m.detail.replace('|', '/')} |"
            for m in obs.milestones
        ),
        "",
        "## Champion changes during the run",
        "",
        "| version | t (s) | events sent | trigger |",
        "|---:|---:|---:|---|",
        *(f"| v{v} | {at:.1f} | {n} | {trig or '-'} |" for v, at, trig, n in obs.champions),
        "",
        "## Drift detections",
        "",
        "| t (s) | events sent | kind | detector | features | statistic | severity |",
        "|---:|---:|---|---|---|---:|---|",
        *(
            f"| {at:.1f} | {n} | {e.kind.value} | {e.detector} | {', '.join(e.features) or '-'} "
            f"| {e.statistic:.4g} > {e.threshold:.4g} | {e.severity} |"
            for e, n, at in obs.drift_events
        ),
        "",
    ]
    if obs.failures:
        lines += ["## Failed requests (first 20)", "", *(f"- {f}" for f in obs.failures[:20]), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, png


# -- the driver --------------------------------------------------------------------------


def _grpc_target(host: str, port: int) -> str:
    return f"{'127.0.0.1' if host in ('0.0.0.0', '', '::') else host}:{port}"


def _decode(model: type[BaseModel], raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        return None


class DemoRun:
    """One run of the scenario against a running platform."""

    def __init__(self, settings: PlatformSettings, options: DemoOptions, run_id: str) -> None:
        self.settings = settings
        self.options = options
        self.run_id = run_id
        self.prefix = f"demo-{run_id}"
        self.scenario = ScenarioConfig(
            events=options.events,
            drift_at=options.drift_at,
            label_delay=options.label_delay,
            seed=options.seed,
            interval=timedelta(seconds=1.0 / options.rate),
            event_id_prefix=self.prefix,
        )
        self.obs = DemoObserver(self.scenario, options.model)
        self.stop_watching = asyncio.Event()
        self.models_ready = asyncio.Event()
        self.last_app: Application | None = None
        self.target = _grpc_target(settings.serving.grpc_host, settings.serving.grpc_port)
        # Any: the generated stubs are typed for the sync API; on an aio channel they
        # return awaitables.
        self._predictor: Any = None

    # -- topics -------------------------------------------------------------------------

    async def watch(self) -> None:
        """Consume drift, retrain, models (from the start, to know the champion) and
        predictions (from now) until told to stop."""
        consumer: AIOKafkaConsumer = make_consumer(
            self.settings.kafka,
            f"demo-{self.run_id}",
            group_id=None,
            isolation_level="read_uncommitted",
        )
        await consumer.start()
        try:
            # The declaration is the contract for the partition count.
            parts = [
                TopicPartition(topic.name, p)
                for topic in (DRIFT, RETRAIN, MODELS, PREDICTIONS)
                for p in range(topic.partitions)
            ]
            consumer.assign(parts)
            ends = await consumer.end_offsets(parts)
            history_end: dict[TopicPartition, int] = {}
            for tp in parts:
                if tp.topic == MODELS.name:
                    consumer.seek(tp, 0)
                    history_end[tp] = ends[tp]
                else:
                    consumer.seek(tp, ends[tp])
            if all(ends[tp] == 0 for tp in history_end):
                self.models_ready.set()
            while not self.stop_watching.is_set():
                batch = await consumer.getmany(timeout_ms=300, max_records=2000)
                for tp, records in batch.items():
                    for record in records:
                        self._on_record(tp, record.offset, record.value, history_end)
                if not self.models_ready.is_set():
                    positions = [await consumer.position(tp) for tp in history_end]
                    if all(
                        p >= end for p, end in zip(positions, history_end.values(), strict=True)
                    ):
                        self.models_ready.set()
        finally:
            await consumer.stop()

    def _on_record(
        self, tp: TopicPartition, offset: int, raw: bytes | None, history_end: dict[Any, int]
    ) -> None:
        if tp.topic == MODELS.name:
            event = _decode(RegistryEvent, raw)
            if event is not None:
                self.obs.on_models(event, history=offset < history_end.get(tp, 0))
        elif tp.topic == DRIFT.name:
            drift = _decode(DriftEvent, raw)
            if drift is not None:
                self.obs.on_drift(drift)
        elif tp.topic == RETRAIN.name:
            request = _decode(RetrainRequest, raw)
            if request is not None:
                self.obs.on_retrain(request)
        elif tp.topic == PREDICTIONS.name and raw is not None:
            try:
                records = prediction_records(raw)  # one record, or a batch's rows
            except ValidationError:
                return
            for record in records:
                self.obs.on_prediction(record, self.prefix)

    # -- predictions --------------------------------------------------------------------

    def predictor(self) -> Any:
        """The Predictor stub (its channel is opened by :meth:`run`, inside the loop)."""
        if self._predictor is None:
            raise RuntimeError("DemoRun.predictor() used outside run()")
        return self._predictor

    def _request(self, app: Application, probe: bool) -> predictor_pb2.PredictRequest:
        request = predictor_pb2.PredictRequest(
            entity_id=app.entity_id,
            model_name=self.options.model,
            features={k: value_pb(v) for k, v in app.features.items()},
            request_id=f"{self.prefix}-{'probe-' + uuid.uuid4().hex[:8] if probe else app.index}",
        )
        if not probe:
            request.event_id = app.event_id
        return request

    async def predict(self, app: Application, probe: bool = False) -> None:
        """Ask serving for ``app`` and account for the answer."""
        obs = self.obs
        # Whether serving had answered when this call was made: calls already in flight
        # when the first answer comes may still be refused by a serving warming up.
        warming = not obs.answers
        try:
            response = await self.predictor().Predict(self._request(app, probe), timeout=10.0)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if warming and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                obs.warmup_unavailable += 1
            else:
                obs.failures.append(
                    f"event {app.index}{' (probe)' if probe else ''}: {code.name}: {exc.details()}"
                )
            return
        if probe:
            obs.probes += 1
            obs.on_probe(int(response.model_version))
        else:
            obs.on_answer(app, int(response.model_version), _as_label(response.prediction))

    # -- the stream ---------------------------------------------------------------------

    async def stream(self) -> None:
        """Produce the scenario at the rate, asking for a prediction per event."""
        producer = make_producer(self.settings.kafka, f"demo-{self.run_id}")
        await producer.start()
        gate = asyncio.Semaphore(self.options.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        deliveries: deque[asyncio.Future[Any]] = deque()

        async def guarded(app: Application) -> None:
            try:
                await self.predict(app)
            finally:
                gate.release()

        try:
            start = datetime.now(UTC)
            t0 = time.monotonic()
            self.obs.started = t0
            scenario = dataclasses.replace(self.scenario, start=start)
            self.obs.scenario = scenario
            for step in schedule(scenario):
                app = step.application
                if step.kind == "label":
                    deliveries.append(
                        await send_model(
                            producer,
                            LABELS,
                            app.entity_id,
                            app.raw_label(at=scenario.start + step.at_index * scenario.interval),
                        )
                    )
                    self.obs.labels_sent += 1
                    continue
                due = t0 + app.index / self.options.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                deliveries.append(
                    await send_model(producer, EVENTS, app.entity_id, app.raw_event())
                )
                if app.index == scenario.drift_at:
                    self.obs.drift_sent_s = self.obs.now()
                    self.obs.milestone(
                        "concept drift",
                        f"the rule changes from Agrawal function {scenario.function_before} "
                        f"to {scenario.function_after}",
                    )
                self.obs.events_sent += 1
                self.last_app = app
                if self.obs.current_champion is None:
                    self.obs.unscored += 1
                else:
                    await gate.acquire()
                    task = asyncio.create_task(guarded(app))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                while len(deliveries) > 5000:
                    await deliveries.popleft()
            if tasks:
                await asyncio.gather(*tasks)
            for fut in deliveries:
                await fut
        finally:
            await producer.stop()

    async def preflight(self, timeout_s: float = 180.0) -> float:
        """Send one probe application and wait until its features are readable online.

        Every scenario prediction reads the features its event produced a moment
        before. A pipeline that is not carrying events yet (a broker that refuses
        ``acks=all`` writes for a while after a start on a busy machine was seen
        to for a minute) would have them answered from missing features, which
        hides the drift the demo is about. So the scenario starts only once an
        event went through ingestion and the features worker to the online store.
        The probe is an entity of its own, never labelled nor predicted.
        Returns the seconds it took; :class:`InfraError` when it did not arrive.
        """
        first = next(step.application for step in schedule(self.scenario))
        probe = dataclasses.replace(
            first,
            event_id=f"{self.prefix}-probe",
            entity_id=f"{self.prefix}-probe",
            event_time=datetime.now(UTC),
        )
        feature = next(iter(probe.features))
        features = self.settings.serving.features_target
        read = feature_store_pb2.GetOnlineFeaturesRequest(
            featureset="loans", entity_ids=[probe.entity_id], feature_names=[feature]
        )
        started = time.monotonic()
        producer = make_producer(self.settings.kafka, f"demo-{self.run_id}-probe")
        await producer.start()
        try:
            await (await send_model(producer, EVENTS, probe.entity_id, probe.raw_event()))
        finally:
            await producer.stop()
        async with grpc.aio.insecure_channel(features) as channel:
            stub: Any = feature_store_pb2_grpc.FeatureStoreStub(channel)
            while True:
                try:
                    answer = await stub.GetOnlineFeatures(read, timeout=5.0)
                    status = answer.entities[0].features[0].status
                    if status == common_pb2.FEATURE_STATUS_PRESENT:
                        return time.monotonic() - started
                except grpc.aio.AioRpcError:
                    pass  # the feature store is still starting: keep asking
                if time.monotonic() - started > timeout_s:
                    raise InfraError(
                        f"a probe event did not reach the online store within {timeout_s:.0f}s: "
                        "the pipeline (Kafka, ingestion, the features worker, Redis) is not "
                        "carrying events; see `driftline status` and the services' logs"
                    )
                await asyncio.sleep(0.2)

    async def run(self) -> None:
        """Stream, then wait (probing serving) until the loop closes or time runs out."""
        channel = grpc.aio.insecure_channel(self.target)
        self._predictor = predictor_pb2_grpc.PredictorStub(channel)
        watcher = asyncio.create_task(self.watch())
        deadline = time.monotonic() + self.options.timeout_s
        try:
            ready = asyncio.create_task(self.models_ready.wait())
            await asyncio.wait({ready, watcher}, timeout=60.0, return_when=FIRST_COMPLETED)
            if watcher.done():
                watcher.result()  # raises what stopped it
            if not ready.done():
                ready.cancel()
                raise InfraError(f"could not read {MODELS.name} within 60s (is Kafka answering?)")
            took = await self.preflight()
            self.obs.milestone(
                "pipeline carrying events",
                f"a probe event reached the online store {took:.1f}s after it was sent",
            )
            await asyncio.wait_for(self.stream(), timeout=max(1.0, deadline - time.monotonic()))
            obs = self.obs
            while time.monotonic() < deadline and obs.problems():
                if watcher.done():
                    break
                waiting_for_new = obs.new_champion is not None and obs.new_version_served_s is None
                if waiting_for_new and self.last_app is not None:
                    await self.predict(self.last_app, probe=True)
                if obs.failures:
                    break
                await asyncio.sleep(1.0)
            # let the prediction log catch up with what serving answered
            for _ in range(math.ceil(self.options.settle_s / 0.5)):
                if obs.logged_predictions >= len(obs.answers):
                    break
                await asyncio.sleep(0.5)
        finally:
            self.stop_watching.set()
            await watcher
            await channel.close(None)


# -- platform lifecycle --------------------------------------------------------------------


@dataclass
class Started:
    """What the demo started (and so must stop)."""

    infra: list[LocalComponent] = field(default_factory=list)
    services: list[ServiceProcess] = field(default_factory=list)


def ensure_platform(
    settings: PlatformSettings,
    config: Path | None,
    env: dict[str, str],
    timeout_s: float,
    say: Callable[[str], None],
) -> Started:
    """Start Kafka, Redis and every service that is not already running or answering."""
    started = Started()
    platform = LocalPlatform(settings, progress=progress)
    try:
        for component in (platform.kafka, platform.redis):
            pid = component.running_pid()
            if pid is not None or component.answering():
                say(f"{component.name}: using the one running on {component.address}")
                continue
            outcome = component.start(timeout_s=settings.infra.ready_timeout_s)
            started.infra.append(component)
            say(outcome.describe())
        asyncio.run(provision_topics(settings.kafka))
        for key, value in env.items():
            os.environ.setdefault(key, value)
        waiting: list[ServiceProcess] = []
        for name in SERVICE_NAMES:
            svc = ServiceProcess(name, settings, config)
            if svc.running_pid() is not None or svc.healthy():
                say(f"{name}: using the one running ({svc.health_url.removesuffix('/healthz')})")
                continue
            if not svc.built:
                raise InfraError(f"service {name} is not built; the demo needs all six")
            svc.start()
            started.services.append(svc)
            waiting.append(svc)
        for svc in waiting:
            seconds = svc.wait_healthy(timeout_s)
            say(f"{svc.name}: started (pid {svc.running_pid()}), healthy in {seconds:.1f}s")
    except BaseException:
        stop_started(started, say)
        raise
    return started


def stop_started(started: Started, say: Callable[[str], None]) -> None:
    """Stop what the demo started, services first, in reverse order."""
    for svc in reversed(started.services):
        say(svc.stop().describe())
    for component in reversed(started.infra):
        say(component.stop().describe())


def _describe_start(env: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{k.removeprefix('DRIFTLINE_').lower()}={v}" for k, v in env)


# -- the command -------------------------------------------------------------------------


def demo(
    ctx: typer.Context,
    events: Annotated[
        int, typer.Option(min=1, help="Loan applications to stream (~2 min at the default rate).")
    ] = 12_000,
    rate: Annotated[
        float, typer.Option(min=1.0, help="Applications sent per second (event time follows).")
    ] = 100.0,
    drift_at: Annotated[
        int,
        typer.Option(
            min=1,
            help="Index of the first application labelled by the new rule (the concept drift: "
            "Agrawal function 2 → 0).",
        ),
    ] = 6_000,
    label_delay: Annotated[
        int,
        typer.Option(min=0, help="A label is sent after this many further applications."),
    ] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the applications and customers.")] = 42,
    model: Annotated[
        str,
        typer.Option(
            help="Model (spec name) to ask for predictions: loans (River, learns online) or "
            "loans-gbm (scikit-learn gradient boosting, refitted on a window)."
        ),
    ] = "loans",
    concurrency: Annotated[
        int, typer.Option(min=1, help="Most Predict calls in flight at once.")
    ] = 32,
    report: Annotated[
        Path,
        typer.Option(help="Markdown report to write; the plot goes next to it as .png."),
    ] = Path(".driftline/demo/report.md"),
    keep_running: Annotated[
        bool,
        typer.Option(help="Leave what the demo started running (stop it with `driftline down`)."),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            min=10.0, help="Seconds the stream plus the wait for the loop to close may take."
        ),
    ] = 900.0,
    service_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each service's /healthz.")
    ] = 90.0,
) -> None:
    """Run the whole loop on a live loan stream with a known concept drift.

    Streams River's Agrawal loan applications to driftline.events (labels follow
    on driftline.labels after --label-delay applications), asks serving for a
    prediction for each one over gRPC, and follows the loop on driftline.drift,
    driftline.retrain, driftline.models and driftline.predictions: first
    champion, drift detected, retrain requested, candidate registered, promoted,
    new champion serving.  At the end it prints a summary and writes a Markdown
    report with a plot of accuracy over the stream.

    Kafka, Redis and the six services are started if they are not running (and
    stopped again at the end, unless --keep-running); services the demo starts
    get scenario-sized settings (training snapshots, monitor warm-up) unless
    DRIFTLINE_* variables set them.  With --model loans-gbm, training loads only
    that spec (examples/models/batch/): its first champion is fitted on schedule
    and the retrain request refits it on the window after the drift.

    Exits 1 when the loop did not close: no drift detected, no retraining
    requested, the new champion not the retraining's candidate or not serving,
    or failed requests.
    """
    if drift_at >= events:
        err_console.print("driftline demo: --drift-at must be smaller than --events")
        raise typer.Exit(2)
    cli = state(ctx)
    settings = cli.settings()
    options = DemoOptions(
        events=events,
        rate=rate,
        drift_at=drift_at,
        label_delay=label_delay,
        seed=seed,
        model=model,
        concurrency=concurrency,
        report=report,
        keep_running=keep_running,
        timeout_s=timeout,
        service_timeout_s=service_timeout,
    )
    models_dir = demo_models_dir(settings.training.models_dir, model)
    env = demo_service_env(options, models_dir=models_dir)

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    say(f"services the demo starts get: {_describe_start(env.items())}")
    try:
        started = ensure_platform(settings, cli.config, env, service_timeout, say)
    except InfraError as exc:
        err_console.print(f"driftline demo: {exc.message}", style="red", markup=False)
        raise typer.Exit(1) from None
    if models_dir is not None and not any(s.name == "training" for s in started.services):
        say(f"training was already running: the loop closes only if it trains {model} "
            f"(its training.models_dir must hold {models_dir})")  # fmt: skip
    run = DemoRun(settings, options, uuid.uuid4().hex[:8])  # opens nothing
    try:
        with Live(
            get_renderable=lambda: live_view(run.obs, events),
            console=console,
            refresh_per_second=4,
            transient=False,
        ) as live:
            run.obs.on_milestone = lambda m: live.console.print(
                f"[{m.wall_s:6.1f}s  event {m.at_event:>6}] {m.name}: {m.detail}",
                highlight=False,
                markup=False,
            )
            asyncio.run(run.run())
    except KeyboardInterrupt:
        err_console.print("interrupted")
    except TimeoutError:
        err_console.print("the stream did not finish within --timeout", style="red")
    except InfraError as exc:
        err_console.print(f"driftline demo: {exc.message}", style="red", markup=False)
    finally:
        if options.keep_running:
            if started.infra or started.services:
                say("left running (--keep-running); `driftline down` stops it")
        else:
            stop_started(started, say)
    obs = run.obs
    report_path, png = write_report(obs, options.report, options)
    table = Table(title="driftline demo summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in obs.summary().items():
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"report: {report_path}  plot: {png}", highlight=False)
    problems = obs.problems()
    if problems:
        err_console.print("the loop did not close: " + "; ".join(problems), style="red")
        raise typer.Exit(1)
    console.print("the loop closed", style="bold green")
