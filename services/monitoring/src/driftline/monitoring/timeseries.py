"""Recent time series in bounded memory: what the dashboard page will chart.

>>> store = TimeSeriesStore(max_points=2)
>>> for t in (1.0, 2.0, 3.0):
...     store.record("accuracy/loans", t, t / 10)
>>> store.series("accuracy/loans")
[(2.0, 0.2), (3.0, 0.3)]
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["TimeSeriesStore"]


class TimeSeriesStore:
    """Named series of ``(unix time, value)``; each keeps its last ``max_points`` points.

    Markers (detections, model changes) are kept apart, also bounded, so charts can
    draw them over the series.
    """

    def __init__(self, max_points: int = 720, max_series: int = 1000, max_markers: int = 500):
        self.max_points = max_points
        self.max_series = max_series
        self._series: dict[str, deque[tuple[float, float]]] = {}
        self._markers: deque[dict[str, Any]] = deque(maxlen=max_markers)

    def record(self, name: str, t: float, value: float) -> None:
        """Append a point; a new series beyond ``max_series`` is dropped (it is a label bug)."""
        s = self._series.get(name)
        if s is None:
            if len(self._series) >= self.max_series:
                return
            s = self._series[name] = deque(maxlen=self.max_points)
        s.append((t, value))

    def mark(self, t: float, kind: str, **detail: Any) -> None:
        """Add a marker such as a drift detection or a champion change."""
        self._markers.append({"t": t, "kind": kind, **detail})

    def series(self, name: str) -> list[tuple[float, float]]:
        """The points of one series, oldest first."""
        return list(self._series.get(name, ()))

    def snapshot(self) -> dict[str, Any]:
        """Every series and marker, JSON-able."""
        return {
            "series": {k: [list(p) for p in v] for k, v in self._series.items()},
            "markers": list(self._markers),
        }
