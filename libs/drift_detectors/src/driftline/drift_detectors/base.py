"""The interface: River's ``DriftDetector``, plus one optional capability.

A detector of a model's live error stream is a River drift detector
(:class:`river.base.DriftDetector` or :class:`river.base.BinaryDriftDetector`):
``update(x)`` with 1 (wrong) or 0 (right) per labelled prediction, then read
``drift_detected``; ``_reset()`` forgets everything.  River's own detectors,
ours and a user's are therefore used the same way by the monitor and by
``driftline eval-drift``.

That is all the monitor needs to raise a drift event.  A detector that can say
more (how large the rise is, where it started, whether it is still warming up)
declares it by also inheriting :class:`ExplainsDrift`; :func:`drift_report`
reads it, and gives a plain report for any other detector.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal, TypeAlias

from river.base import BinaryDriftDetector, DriftDetector

__all__ = [
    "BinaryDriftDetector",
    "DriftDetector",
    "DriftReport",
    "ErrorDetector",
    "ExplainsDrift",
    "Severity",
    "detections",
    "drift_report",
    "is_drift_detector",
]

ErrorDetector: TypeAlias = DriftDetector | BinaryDriftDetector
"""A River drift detector.  An error stream's values are booleans (True: wrong), which both
kinds take (a numeric detector reads them as 1 and 0)."""

Severity: TypeAlias = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class DriftReport:
    """What a detection can tell: the monitor turns it into a ``DriftEvent``."""

    statistic: float
    """The detector's statistic when it fired."""
    threshold: float
    """The value of the statistic at which it fires."""
    window: int
    """Updates since the estimated onset, the detecting one included (1: the onset is unknown
    and taken to be the detection itself)."""
    severity: Severity
    """How much the drift matters (the retraining policy ignores detections below its minimum)."""


class ExplainsDrift(abc.ABC):
    """Optional capability of a detector, declared by inheriting it: it reports what it saw.

    Read after ``update``: :attr:`last_drift` is set exactly when ``drift_detected`` is.
    """

    @property
    @abc.abstractmethod
    def last_drift(self) -> DriftReport | None:
        """The detection the last update completed, or None."""

    @property
    @abc.abstractmethod
    def statistic(self) -> float:
        """The current value of the statistic (a gauge of how close the next alarm is)."""

    @property
    @abc.abstractmethod
    def watching(self) -> bool:
        """False while the detector is still learning its reference and cannot fire.

        A drift cannot be shown to start before the detector watched: the monitor
        never dates an onset earlier than the update at which this became True.
        """


_UNEXPLAINED = DriftReport(statistic=1.0, threshold=1.0, window=1, severity="warning")


def drift_report(detector: ErrorDetector) -> DriftReport:
    """The report of the detection ``detector`` just made (call when ``drift_detected``).

    A detector that does not :class:`ExplainsDrift` gets a plain alarm: statistic 1
    at threshold 1, onset at the detection, ``warning`` severity.
    """
    if isinstance(detector, ExplainsDrift) and detector.last_drift is not None:
        return detector.last_drift
    return _UNEXPLAINED


def detections(detector: ErrorDetector, errors: bytes) -> list[int]:
    """Indices of ``errors`` (1 wrong, 0 right) at which ``detector`` reported a drift.

    River's loop: ``update``, then read ``drift_detected``.
    """
    hits = []
    for i, e in enumerate(errors):
        detector.update(e == 1)
        if detector.drift_detected:
            hits.append(i)
    return hits


def is_drift_detector(obj: object) -> bool:
    """Whether ``obj`` implements River's detector interface (by inheriting River's base)."""
    return isinstance(obj, DriftDetector | BinaryDriftDetector)
