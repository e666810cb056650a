"""The ops dashboard: a self-contained page on the monitor's admin port, and what it charts.

The page (``GET /`` and ``GET /dashboard``) is plain HTML, CSS and JavaScript shipped
in ``dashboard_static/`` — no CDN, no build step — and draws its charts as inline SVG
from ``GET /api/timeseries``, every few seconds.  ``/?model=NAME`` narrows it to one
model and its feature set.

:class:`MonitorCore` records accuracy, the error CUSUM, per-feature drift statistics
and the markers (detections, champion changes, retraining requests);
:class:`ChartedMonitorCore` adds what only the dashboard needs:

* ``events_per_s/<features|predictions|labels>`` — records per second per input topic;
* ``latency_ms_p50/<model>``, ``latency_ms_p99/<model>`` — predict latency of the
  served (non-shadow) predictions since the previous sample;
* ``champion_version/<model>`` — the champion's version, a step at each change;
* ``unserved_retrains/<model>`` — retrain requests Driftline could not serve for the
  model (it has no trainer for it), kept from the ``retrain_unserved`` events on
  ``driftline.models`` until a newer version is registered, as the registry keeps
  them; each is also a ``retrain_unserved`` marker in the events log, and
  ``/api/timeseries`` lists the open ones under ``unserved_retrains``.

>>> from driftline.settings import MonitoringSettings
>>> core = ChartedMonitorCore(MonitoringSettings())
>>> core.sample(100.0)
>>> core.counts["features"] += 50
>>> core.sample(102.0)
>>> core.series.series("events_per_s/features")
[(102.0, 25.0)]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from driftline.contracts.messages import (
    PredictionRecord,
    RegistryEvent,
    RegistryEventKind,
    utcnow,
)
from driftline.monitoring.core import MonitorCore, Outputs
from driftline.monitoring.timeseries import TimeSeriesStore
from driftline.settings import MonitoringSettings

__all__ = [
    "DASHBOARD_PATHS",
    "RATE_TOPICS",
    "ChartedMonitorCore",
    "dashboard_snapshot",
    "mount_dashboard",
    "percentile",
]

DASHBOARD_PATHS = ("/", "/dashboard")
"""Where the page is served."""

RATE_TOPICS = ("features", "predictions", "labels")
"""Keys of :attr:`MonitorCore.counts` charted as events per second."""

_LATENCY_KEEP = 10_000
"""Most latencies held per model between two samples (the newest are kept)."""

_STATIC = "dashboard_static"
_ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of non-empty ``values``.

    >>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50), percentile([5.0, 1.0, 3.0], 99)
    (3.0, 5.0)
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class ChartedMonitorCore(MonitorCore):
    """A :class:`MonitorCore` that also keeps the series only the dashboard charts.

    The Kafka loop drives it exactly like the plain core; :meth:`sample` (called every
    ``publish_interval_s``) appends events/s, latency percentiles and champion versions
    next to the core's own series.  The first :meth:`sample` only sets the rate baseline.
    """

    def __init__(
        self,
        settings: MonitoringSettings,
        clock: Callable[[], datetime] = utcnow,
        series: TimeSeriesStore | None = None,
    ) -> None:
        super().__init__(settings, clock, series)
        self._latencies: dict[str, deque[float]] = {}
        self._last_counts: dict[str, int] | None = None
        self._last_sample_s = 0.0
        self.unserved_retrains: dict[str, list[dict[str, Any]]] = {}
        """model -> the retrain requests not served since its latest version, oldest first."""
        self._unserved_seen: dict[str, set[str]] = {}
        self._latest_version: dict[str, int] = {}

    def on_prediction(self, record: PredictionRecord, trace_id: str | None = None) -> Outputs:
        """As :meth:`MonitorCore.on_prediction`; a served prediction's latency is also kept."""
        out = super().on_prediction(record, trace_id)  # first: it may refuse the record
        if not record.shadow and math.isfinite(record.latency_ms):
            window = self._latencies.get(record.model_name)
            if window is None:
                window = self._latencies[record.model_name] = deque(maxlen=_LATENCY_KEEP)
            window.append(record.latency_ms)
        return out

    def on_registry(self, event: RegistryEvent) -> Outputs:
        """As :meth:`MonitorCore.on_registry`; a champion change is also a step in its series."""
        known = self.models.get(event.model_name)
        before = known.champion_version if known is not None else None
        out = super().on_registry(event)
        self._follow_unserved(event)
        st = self.models.get(event.model_name)
        if st is not None and st.champion_version is not None and st.champion_version != before:
            now_s = self.clock().timestamp()
            if before is not None:
                # Hold the old version up to the change, so the line steps instead of sloping.
                self.series.record(f"champion_version/{event.model_name}", now_s, float(before))
            self.series.record(
                f"champion_version/{event.model_name}", now_s, float(st.champion_version)
            )
        return out

    def _follow_unserved(self, event: RegistryEvent) -> None:
        """Keep the open unserved retrain requests as the registry does (see
        :mod:`driftline.registry.state`): once per request id, cleared by a newer version,
        a request written before a version the log registered ahead of it ignored."""
        name = event.model_name
        if event.kind == RegistryEventKind.REGISTERED:
            if event.version > self._latest_version.get(name, 0):
                self._latest_version[name] = event.version
                self.unserved_retrains.pop(name, None)
            return
        if event.kind != RegistryEventKind.RETRAIN_UNSERVED or not event.trigger:
            return
        seen = self._unserved_seen.setdefault(name, set())
        if event.trigger in seen or event.version < self._latest_version.get(name, 0):
            return
        seen.add(event.trigger)
        extras = event.spec.get("_registry")
        drift_ids = extras.get("drift_ids", []) if isinstance(extras, dict) else []
        entry = {
            "t": event.at.timestamp(),
            "request_id": event.trigger,
            "reason": event.reason,
            "drift_ids": [str(d) for d in drift_ids] if isinstance(drift_ids, list) else [],
        }
        self.unserved_retrains.setdefault(name, []).append(entry)
        self.series.mark(
            self.clock().timestamp(),
            "retrain_unserved",
            model=name,
            request_id=event.trigger,
            reason=event.reason,
        )

    def sample(self, now_s: float) -> None:
        """Append the core's statistics, then events/s, latency, champion versions and
        unserved retrain requests."""
        super().sample(now_s)
        counts = {k: self.counts[k] for k in RATE_TOPICS}
        if self._last_counts is not None and now_s > self._last_sample_s:
            dt = now_s - self._last_sample_s
            for topic, n in counts.items():
                self.series.record(
                    f"events_per_s/{topic}", now_s, (n - self._last_counts[topic]) / dt
                )
        self._last_counts, self._last_sample_s = counts, now_s
        for model, window in self._latencies.items():
            if window:
                values = list(window)
                window.clear()
                self.series.record(f"latency_ms_p50/{model}", now_s, percentile(values, 50))
                self.series.record(f"latency_ms_p99/{model}", now_s, percentile(values, 99))
        for name, st in self.models.items():
            if st.champion_version is not None:
                self.series.record(f"champion_version/{name}", now_s, float(st.champion_version))
        for name in set(self.unserved_retrains) | set(self._unserved_seen):
            pending = len(self.unserved_retrains.get(name, ()))
            self.series.record(f"unserved_retrains/{name}", now_s, float(pending))


def dashboard_snapshot(core: MonitorCore) -> dict[str, Any]:
    """What ``/api/timeseries`` returns: every series and marker, plus chart context.

    ``now`` is the server's clock (unix seconds) so the page's time axis does not
    depend on the browser's; ``thresholds`` are the PSI / Jensen-Shannon alarm levels;
    ``featuresets`` maps each model to its feature set, so drift charts find their model;
    ``unserved_retrains`` maps each model to the retrain requests Driftline could not serve
    since its latest version (``{t, request_id, reason, drift_ids}``, oldest first);
    ``links`` are ``monitoring.links`` (name → URL: the ops stack's pages).
    """
    snap = core.series.snapshot()
    snap["now"] = core.clock().timestamp()
    snap["thresholds"] = {"psi": core.settings.psi_threshold, "js": core.settings.js_threshold}
    snap["featuresets"] = dict(core.featureset_of)
    snap["links"] = dict(core.settings.links)
    if isinstance(core, ChartedMonitorCore):
        snap["unserved_retrains"] = {
            name: list(entries) for name, entries in core.unserved_retrains.items() if entries
        }
    return snap


def _asset(name: str) -> str:
    return resources.files("driftline.monitoring").joinpath(_STATIC, name).read_text("utf-8")


def mount_dashboard(app: FastAPI) -> None:
    """Serve the page at :data:`DASHBOARD_PATHS` and its script and style sheet.

    The page reads ``api/timeseries`` (relative), which the service serves with
    :func:`dashboard_snapshot`.  The assets are read once here, so a broken install
    fails at start, not on the first visit.
    """
    page = _asset("index.html")
    assets = {name: (_asset(name), media) for name, media in _ASSETS.items()}

    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    for path in DASHBOARD_PATHS:
        app.add_api_route(
            path, index, methods=["GET"], tags=["dashboard"], summary="Ops dashboard page"
        )

    def asset_route(body: str, media: str) -> Any:
        async def serve_asset() -> Response:
            return Response(body, media_type=media, headers={"Cache-Control": "no-cache"})

        return serve_asset

    for name, (body, media) in assets.items():
        app.add_api_route(
            f"/dashboard/static/{name}",
            asset_route(body, media),
            methods=["GET"],
            include_in_schema=False,
        )
