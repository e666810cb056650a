"""The conformance suite every error-rate detector passes (built-in, River's, a plug-in's).

A detector is checked on a :class:`DetectorCase`: a name and parameters, built
through the catalog exactly as the monitor builds ``monitoring.detector``, and
the error streams it must handle: an abrupt rise of the error rate it must
detect soon after the change and not before, and a stationary stream on which
it must stay quiet.  Each check raises ``AssertionError`` naming what broke;
:func:`run_checks` runs them all.  A test parametrises over :data:`CHECKS` and
its cases, so a new detector gets the same suite by adding one case.

The streams are seeded: a detector passes or fails them deterministically.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from driftline.drift_detectors.base import (
    ErrorDetector,
    ExplainsDrift,
    detections,
    drift_report,
    is_drift_detector,
)
from driftline.drift_detectors.catalog import detector_builder

__all__ = ["CHECKS", "DetectorCase", "bernoulli_errors", "detections", "run_checks"]


def bernoulli_errors(
    seed: int, p_before: float, p_after: float, n_before: int, n_after: int
) -> bytes:
    """A pure error stream: Bernoulli(``p_before``), then Bernoulli(``p_after``).

    The change is at index ``n_before``.

    >>> bernoulli_errors(1, 0.0, 1.0, 3, 2)
    b'\\x00\\x00\\x00\\x01\\x01'
    """
    rng = random.Random(seed)
    return bytes(
        1 if rng.random() < (p_before if i < n_before else p_after) else 0
        for i in range(n_before + n_after)
    )


@dataclass(frozen=True)
class DetectorCase:
    """A detector, named as the settings name it, and what it must achieve."""

    type: str
    """The registered name (``monitoring.detector.type``)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Its parameters (the rest of ``monitoring.detector``)."""
    rate_before: float = 0.1
    """Error rate of the stationary stream and before the rise."""
    rate_after: float = 0.5
    """Error rate after the rise."""
    change_at: int = 5_000
    """Index of the first example of the higher error rate (after any warm-up)."""
    max_delay: int = 1_000
    """Most examples after the change before the first detection."""
    quiet_for: int = 20_000
    """Length of the stationary stream that must raise nothing."""
    seed: int = 1

    @property
    def name(self) -> str:
        """A test id, e.g. ``river.ADWIN(delta=0.01)``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.type}({args})"

    def build(self) -> ErrorDetector:
        """A fresh detector, built the way the monitor builds one."""
        return detector_builder(self.type, self.params)()

    def rise(self) -> bytes:
        """The abrupt-rise stream."""
        return bernoulli_errors(
            self.seed, self.rate_before, self.rate_after, self.change_at, self.max_delay * 2
        )

    def stationary(self) -> bytes:
        """The stationary stream."""
        return bernoulli_errors(
            self.seed + 1, self.rate_before, self.rate_before, self.quiet_for, 0
        )


def check_follows_river_interface(case: DetectorCase) -> None:
    """A River drift detector: ``update`` returns nothing, ``drift_detected`` is a bool that
    starts False, ``clone()`` gives a fresh one of the same parameters."""
    det = case.build()
    assert is_drift_detector(det), (
        f"{case.type} built a {type(det).__name__}, not a river.base.DriftDetector or "
        "BinaryDriftDetector"
    )
    assert det.drift_detected is False, "a new detector has detected nothing"
    for x in (False, True, False):
        returned = det.update(x)
        assert returned is None, f"update returned {returned!r} (River's update returns None)"
        assert isinstance(det.drift_detected, bool), type(det.drift_detected)
    twin = det.clone()
    assert type(twin) is type(det), type(twin)
    assert twin._get_params() == det._get_params(), (twin._get_params(), det._get_params())


def check_detects_an_abrupt_rise(case: DetectorCase) -> None:
    """The error rate rises abruptly: a detection within ``max_delay`` after the change and
    none before it."""
    hits = detections(case.build(), case.rise())
    early = [h for h in hits if h < case.change_at]
    assert not early, f"false alarms before the change at {case.change_at}: {early[:5]}"
    assert hits, f"no detection of {case.rate_before} -> {case.rate_after} at {case.change_at}"
    delay = hits[0] - case.change_at
    assert delay <= case.max_delay, f"detected {delay} examples after the change"


def check_quiet_on_a_stationary_stream(case: DetectorCase) -> None:
    """A stationary error stream raises nothing."""
    hits = detections(case.build(), case.stationary())
    assert not hits, (
        f"{len(hits)} false alarm(s) on {case.quiet_for} examples at error rate "
        f"{case.rate_before}: {hits[:5]}"
    )


def check_resets(case: DetectorCase) -> None:
    """``_reset()`` after a detection gives a detector that behaves like a new one."""
    stream = case.rise()
    det = case.build()
    for e in stream:
        det.update(e == 1)
        if det.drift_detected:
            break
    else:
        raise AssertionError("no detection to reset after")
    det._reset()
    assert det.drift_detected is False, "drift_detected is still set after _reset()"
    assert detections(det, stream) == detections(case.build(), stream), (
        "after _reset() the detector answers the same stream unlike a new one"
    )


def check_reports_its_detection(case: DetectorCase) -> None:
    """What the monitor publishes is sound: window >= 1 and a known severity; for a
    detector that :class:`ExplainsDrift`, a report exactly when ``drift_detected``, only
    while watching, a statistic at its threshold and an onset near the change."""
    det = case.build()
    explainer = det if isinstance(det, ExplainsDrift) else None
    for i, e in enumerate(case.rise()):
        watching = explainer is None or explainer.watching
        det.update(e == 1)
        if explainer is not None:
            assert (explainer.last_drift is not None) == det.drift_detected, (
                f"update {i}: last_drift {explainer.last_drift!r}, "
                f"drift_detected {det.drift_detected}"
            )
        if not det.drift_detected:
            continue
        report = drift_report(det)
        assert report.window >= 1, report
        assert report.severity in ("info", "warning", "critical"), report
        if explainer is not None:
            assert watching, f"update {i}: a detection before the detector was watching"
            assert report.statistic >= report.threshold, report
            onset = i - report.window + 1
            assert case.change_at - case.max_delay <= onset <= i, (
                f"onset estimated at {onset}, the change is at {case.change_at}, detected at {i}"
            )
        return
    raise AssertionError("no detection to report")


CHECKS: tuple[Callable[[DetectorCase], None], ...] = (
    check_follows_river_interface,
    check_detects_an_abrupt_rise,
    check_quiet_on_a_stationary_stream,
    check_resets,
    check_reports_its_detection,
)
"""Every check, in the order a failure is most telling."""


def run_checks(case: DetectorCase) -> None:
    """Run every check of :data:`CHECKS` on ``case``."""
    for check in CHECKS:
        check(case)
