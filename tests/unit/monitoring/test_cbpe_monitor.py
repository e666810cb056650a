"""The monitor's label-free accuracy estimate (CBPE), through its core and its metrics.

Predictions carry the probabilities a logistic model served; their labels come
``DELAY`` predictions later, as a slow label source would send them (no sockets).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftline.contracts.messages import (
    DriftKind,
    PredictionRecord,
    RegistryEvent,
    RegistryEventKind,
    ValidLabel,
)
from driftline.monitoring.core import MonitorCore, Outputs
from driftline.monitoring.monitor_metrics import MonitorMetrics
from driftline.settings import MonitoringSettings
from driftline.telemetry import ServiceMetrics

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DELAY = 500
SETTINGS = MonitoringSettings(cbpe_reference=400, cbpe_window=200, cbpe_margin=0.05)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _registry(kind: RegistryEventKind, version: int, alias: str | None = None) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"{kind.value}-{version}-{alias}", kind=kind, model_name="loans",
        version=version, alias=alias, actor="t", at=T0,
    )  # fmt: skip


class Feed:
    """Serves predictions of a 1-D logistic model and sends each label ``DELAY`` later."""

    def __init__(self, core: MonitorCore, clock: Clock, seed: int = 7) -> None:
        self.core, self.clock = core, clock
        self.rng = np.random.default_rng(seed)
        self.i = 0
        self.labels: list[tuple[str, int]] = []

    def serve(self, n: int, spread: float, version: int = 1) -> list[tuple[int, Outputs]]:
        """``n`` predictions of inputs ~ N(0, spread): the smaller, the nearer the boundary."""
        seen = []
        for x in self.rng.normal(0, spread, n):
            i = self.i
            self.clock.now = T0 + timedelta(seconds=i)
            served_p1 = float(1 / (1 + np.exp(-6 * x)))  # overconfident: the truth has 2
            label = int(self.rng.random() < 1 / (1 + np.exp(-2 * x)))
            out = self.core.on_prediction(
                PredictionRecord(
                    request_id=f"r{i}", event_id=f"e{i}", entity_id="c", model_name="loans",
                    model_version=version, features={}, prediction=int(served_p1 >= 0.5),
                    probabilities={"0": 1 - served_p1, "1": served_p1}, latency_ms=1.0,
                    served_at=self.clock.now,
                )
            )  # fmt: skip
            self.labels.append((f"e{i}", label))
            if i >= DELAY:
                event_id, y = self.labels[i - DELAY]
                out.extend(
                    self.core.on_label(
                        ValidLabel(
                            event_id=event_id, entity_id="c", event_time=self.clock.now,
                            label=y, ingested_at=self.clock.now,
                        )
                    )
                )  # fmt: skip
            if out.drift or out.retrain:
                seen.append((i, out))
            self.i += 1
        return seen


def _cbpe_events(seen: list[tuple[int, Outputs]]) -> list[tuple[int, object]]:
    return [(i, ev) for i, out in seen for ev in out.drift if ev.detector == "cbpe"]


def _gauge(metrics: ServiceMetrics, name: str) -> float | None:
    text = generate_latest(metrics.registry).decode()
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels == {"model": "loans"}
    ]
    return found[0] if found else None


def _core() -> tuple[MonitorCore, Clock]:
    clock = Clock()
    core = MonitorCore(SETTINGS, clock=clock)
    for version in (1, 2):
        core.on_registry(_registry(RegistryEventKind.REGISTERED, version))
    core.on_registry(_registry(RegistryEventKind.ALIAS_SET, 1, "champion"))
    return core, clock


def test_a_shift_toward_the_boundary_is_an_early_warning_before_any_label_of_it() -> None:
    core, clock = _core()
    base = ServiceMetrics("monitoring")
    metrics = MonitorMetrics(base)
    feed = Feed(core, clock)
    st = core.model("loans")

    # Until the first 400 labels are in (predictions 0..399, labelled 500 later), no estimate.
    seen = feed.serve(DELAY + SETTINGS.cbpe_reference - 1, spread=2.0)
    metrics.refresh(core)
    assert st.estimated_accuracy is None
    assert _gauge(base, "driftline_estimated_accuracy") is None
    seen += feed.serve(2_000, spread=2.0)
    metrics.refresh(core)
    estimate = _gauge(base, "driftline_estimated_accuracy")
    floor = _gauge(base, "driftline_estimated_accuracy_floor")
    assert estimate is not None and floor is not None and estimate > floor
    assert st.cbpe.reference_accuracy == pytest.approx(floor + SETTINGS.cbpe_margin)
    assert not _cbpe_events(seen), "stationary predictions raised a CBPE alarm"

    # Inputs crowd the decision boundary; their labels are 500 predictions away.
    shift_at = feed.i
    seen = feed.serve(DELAY - 1, spread=0.3)
    [(at, event)] = _cbpe_events(seen)
    assert shift_at <= at < shift_at + SETTINGS.cbpe_window
    assert event.kind == DriftKind.PREDICTION  # type: ignore[attr-defined]
    assert event.statistic < event.threshold == pytest.approx(floor)  # type: ignore[attr-defined]
    assert event.onset_event_time is not None  # type: ignore[attr-defined]
    # An early warning is reported, never a retraining trigger: nothing to learn from yet.
    assert not [r for _, out in seen for r in out.retrain]
    assert core.policy.episode("loans") is None
    assert core.detections[("loans", "prediction", "cbpe")] == 1
    metrics.refresh(core)
    low = _gauge(base, "driftline_estimated_accuracy")
    assert low is not None and low < floor


def test_a_new_champion_is_calibrated_on_its_own_answers() -> None:
    core, clock = _core()
    base = ServiceMetrics("monitoring")
    metrics = MonitorMetrics(base)
    feed = Feed(core, clock)
    feed.serve(DELAY + SETTINGS.cbpe_reference + 100, spread=2.0)
    metrics.refresh(core)
    assert _gauge(base, "driftline_estimated_accuracy") is not None

    core.on_registry(_registry(RegistryEventKind.ALIAS_SET, 2, "champion"))
    metrics.refresh(core)
    st = core.model("loans")
    assert st.estimated_accuracy is None
    assert _gauge(base, "driftline_estimated_accuracy") is None
    assert _gauge(base, "driftline_estimated_accuracy_floor") is None

    # v2's own answers: late labels of v1 do not count toward its reference...
    feed.serve(DELAY, spread=2.0, version=2)
    assert st.estimated_accuracy is None
    # ...its own 400 labelled predictions do.
    feed.serve(SETTINGS.cbpe_reference, spread=2.0, version=2)
    assert st.estimated_accuracy is not None


def test_predictions_without_probabilities_get_no_estimate() -> None:
    core, _ = _core()
    for i in range(SETTINGS.cbpe_reference + 10):
        core.on_prediction(
            PredictionRecord(
                request_id=f"r{i}", event_id=f"e{i}", entity_id="c", model_name="loans",
                model_version=1, features={}, prediction=1, latency_ms=1.0, served_at=T0,
            )
        )  # fmt: skip
        core.on_label(
            ValidLabel(event_id=f"e{i}", entity_id="c", event_time=T0, label=1, ingested_at=T0)
        )
    st = core.model("loans")
    assert st.live_accuracy == 1.0 and st.estimated_accuracy is None


def test_cbpe_can_be_turned_off() -> None:
    clock = Clock()
    core = MonitorCore(MonitoringSettings(cbpe_reference=0), clock=clock)
    feed = Feed(core, clock)
    seen = feed.serve(1_500, spread=2.0)
    seen += feed.serve(1_000, spread=0.3)
    assert core.model("loans").estimated_accuracy is None
    assert not _cbpe_events(seen)
