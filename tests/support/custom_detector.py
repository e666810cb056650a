"""A user's own error-rate detector, as a plug-in would ship one.

A River :class:`~river.base.BinaryDriftDetector` and nothing more (it does not
``ExplainsDrift``): the monitor and ``eval-drift`` must use it through River's
interface alone.  Importable as ``support.custom_detector.WindowRateDetector``.
"""

from __future__ import annotations

from collections import deque

from river.base import BinaryDriftDetector


class WindowRateDetector(BinaryDriftDetector):
    """Fires when the error rate of the last ``window`` outcomes exceeds the rate of the first
    ``reference`` outcomes (since the last reset) by more than ``margin``; after firing it
    starts over, learning a new reference."""

    def __init__(self, reference: int = 2000, window: int = 200, margin: float = 0.15) -> None:
        super().__init__()
        self.reference = reference
        self.window = window
        self.margin = margin
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._seen = 0
        self._reference_errors = 0
        self._recent: deque[int] = deque(maxlen=self.window)
        self._recent_errors = 0

    def update(self, x: bool) -> None:
        if self.drift_detected:
            self._reset()
        e = 1 if x else 0
        if self._seen < self.reference:
            self._seen += 1
            self._reference_errors += e
            return
        if len(self._recent) == self.window:
            self._recent_errors -= self._recent[0]
        self._recent.append(e)
        self._recent_errors += e
        if len(self._recent) < self.window:
            return
        rise = self._recent_errors / self.window - self._reference_errors / self.reference
        self._drift_detected = rise > self.margin
