"""The monitor's own Prometheus series, refreshed from the core's state."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge

from driftline.monitoring.core import MonitorCore
from driftline.telemetry import ServiceMetrics

__all__ = ["MonitorMetrics"]


class MonitorMetrics:
    """Drift statistics per feature, live accuracy, events/s, detections and requests."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        r = metrics.registry
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

    def refresh(self, core: MonitorCore) -> None:
        """Copy the core's current figures into the gauges."""
        now = time.monotonic()
        total = sum(core.counts[k] for k in ("features", "predictions", "labels", "registry"))
        if now > self._last_t:
            self.events_per_second.set((total - self._last_total) / (now - self._last_t))
        self._last_total, self._last_t = total, now
        for name, st in core.models.items():
            acc = st.live_accuracy
            if acc is not None:
                self.live_accuracy.labels(model=name).set(acc)
            statistic = st.statistic
            if statistic is not None:
                self.error_cusum.labels(model=name).set(statistic)
        for fs, mon in core.features.items():
            for feature, stats in mon.latest.items():
                for stat, value in stats.items():
                    self.drift_statistic.labels(featureset=fs, feature=feature, statistic=stat).set(
                        value
                    )
        self.join_pending.set(core.join.pending)
