"""The monitor's own Prometheus series, refreshed from the core's state."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge

from driftline.contracts.messages import DriftKind
from driftline.monitoring.core import MonitorCore
from driftline.telemetry import ServiceMetrics

__all__ = ["DISTRIBUTION_DETECTORS", "MonitorMetrics"]

DISTRIBUTION_DETECTORS = {
    DriftKind.DATA: ("adwin", "psi", "ks", "js", "kswin"),
    DriftKind.PREDICTION: ("adwin", "psi", "ks", "js", "cbpe"),
}
"""The detectors of :class:`DistributionMonitor` on a feature set's inputs and on a
model's outputs (which run no KSWIN; ``cbpe`` is the label-free accuracy estimate of its
probabilities); concept drift's is ``monitoring.detector.type``."""


class MonitorMetrics:
    """Drift statistics per feature, live and estimated accuracy, events/s, detections and
    requests.

    The series alerts watch (detection counters and times, retrain requests) are
    created at 0 for every model the monitor knows (:meth:`track`), so a model's first
    detection is an increase that ``increase()`` sees and every rule's series exists
    from the start; the other gauges of a model are absent until measured, and removed
    when its figure is gone again (a new champion starts a new window).

    >>> from prometheus_client import generate_latest
    >>> base = ServiceMetrics("monitoring")
    >>> m = MonitorMetrics(base, concept_detector="error_rise")
    >>> m.track(["loans"])
    >>> text = generate_latest(base.registry).decode()
    >>> 'detections_total{detector="error_rise",kind="concept",model="loans"} 0.0' in text
    True
    >>> "driftline_live_accuracy{" in text
    False
    """

    def __init__(self, metrics: ServiceMetrics, *, concept_detector: str = "error_rise") -> None:
        r = metrics.registry
        self.concept_detector = concept_detector
        self._tracked: set[str] = set()
        self.drift_statistic = Gauge(
            "driftline_drift_statistic",
            "Last window's drift statistic of a feature against its reference",
            ["featureset", "feature", "statistic"],
            registry=r,
        )
        self.live_accuracy = Gauge(
            "driftline_live_accuracy",
            "Accuracy of the champion over the last labelled predictions",
            ["model"],
            registry=r,
        )
        self.labelled = Gauge(
            "driftline_live_accuracy_labelled",
            "Labelled predictions of the champion driftline_live_accuracy is computed over "
            "(up to monitoring.accuracy_window)",
            ["model"],
            registry=r,
        )
        self.estimated_accuracy = Gauge(
            "driftline_estimated_accuracy",
            "Label-free accuracy estimate (CBPE) of the champion over its last "
            "monitoring.cbpe_window predictions: their mean confidence, calibrated on its first "
            "monitoring.cbpe_reference labelled predictions (absent until then)",
            ["model"],
            registry=r,
        )
        self.estimated_floor = Gauge(
            "driftline_estimated_accuracy_floor",
            "The calibration window's accuracy minus monitoring.cbpe_margin: an estimate below "
            "it raises a cbpe prediction-drift event (absent until calibrated)",
            ["model"],
            registry=r,
        )
        self.error_cusum = Gauge(
            "driftline_error_rise_statistic",
            "Statistic of the error detector (the error_rise CUSUM alarms at its threshold; "
            "absent for detectors that report none)",
            ["model"],
            registry=r,
        )
        self.events_per_second = Gauge(
            "driftline_monitor_events_per_second",
            "Records the monitor processed per second since the last refresh",
            registry=r,
        )
        self.detections = Counter(
            "driftline_drift_detections",
            "Drift events emitted",
            ["model", "kind", "detector"],
            registry=r,
        )
        self.last_detected = Gauge(
            "driftline_drift_last_detected_timestamp_seconds",
            "When drift of this kind was last detected for the model (0: not since the "
            "monitor started); later than driftline_champion_since_timestamp_seconds means "
            "the current champion drifted and no new one has replaced it yet",
            ["model", "kind"],
            registry=r,
        )
        self.champion_since = Gauge(
            "driftline_champion_since_timestamp_seconds",
            "When the monitor saw the model's current champion set (absent with no champion)",
            ["model"],
            registry=r,
        )
        self.retrain_requests = Counter(
            "driftline_retrain_requests", "Retraining requests emitted", ["model"], registry=r
        )
        self.join_pending = Gauge(
            "driftline_label_join_pending",
            "Predictions and labels waiting for their other half",
            registry=r,
        )
        self._last_total = 0
        self._last_t = time.monotonic()

    def track(self, models: Iterable[str]) -> None:
        """Create the detection and retrain-request counters of ``models`` at 0 (once)."""
        for name in models:
            if name in self._tracked:
                continue
            self._tracked.add(name)
            self.detections.labels(model=name, kind=DriftKind.CONCEPT.value,
                                   detector=self.concept_detector)  # fmt: skip
            for kind, detectors in DISTRIBUTION_DETECTORS.items():
                for detector in detectors:
                    self.detections.labels(model=name, kind=kind.value, detector=detector)
            self.retrain_requests.labels(model=name)
            for kind in DriftKind:
                self.last_detected.labels(model=name, kind=kind.value)

    def track_known(self, core: MonitorCore) -> None:
        """:meth:`track` every model ``core`` knows: registered on the models log or seen."""
        if len(self._tracked) < len(core.registered.keys() | core.models.keys()):
            self.track(core.registered.keys() | core.models.keys())

    def refresh(self, core: MonitorCore) -> None:
        """Copy the core's current figures into the gauges."""
        self.track_known(core)
        now = time.monotonic()
        total = sum(core.counts[k] for k in ("features", "predictions", "labels", "registry"))
        if now > self._last_t:
            self.events_per_second.set((total - self._last_total) / (now - self._last_t))
        self._last_total, self._last_t = total, now
        for name, st in core.models.items():
            _show(self.live_accuracy, name, st.live_accuracy)
            _show(self.labelled, name, float(len(st.recent)) if st.recent else None)
            _show(self.error_cusum, name, st.statistic if st.recent else None)
            estimate = st.estimated_accuracy
            _show(self.estimated_accuracy, name, estimate)
            _show(self.estimated_floor, name, st.cbpe.floor if estimate is not None else None)
            _show(self.champion_since, name, st.champion_since)
            for kind, at in st.last_detected.items():
                self.last_detected.labels(model=name, kind=kind).set(at)
        for fs, mon in core.features.items():
            for feature, stats in mon.latest.items():
                for stat, value in stats.items():
                    self.drift_statistic.labels(featureset=fs, feature=feature, statistic=stat).set(
                        value
                    )
        self.join_pending.set(core.join.pending)


def _show(gauge: Gauge, model: str, value: float | None) -> None:
    """Set ``gauge{model}``, or remove it while there is nothing measured (never a 0)."""
    if value is not None:
        gauge.labels(model=model).set(value)
    else:
        with contextlib.suppress(KeyError):
            gauge.remove(model)
