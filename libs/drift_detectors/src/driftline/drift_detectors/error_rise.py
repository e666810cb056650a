"""A one-sided detector of a *rise* in a model's live error rate.

River's ADWIN and PageHinkley fire on any change of the mean, so they also fire
when the error falls (a model still learning, a recovery after retraining), and
the Bernoulli detectors (DDM, EDDM, HDDM) either miss small rises or raise false
alarms on noisy streams.  :class:`ErrorRiseDetector` is built for the one
question the retraining trigger asks: *has the error rate risen, by an amount
that matters, above what it was?*

It combines

* a **reference**: the error rate of the stream ``lag`` examples ago, an
  exponentially weighted mean fed by a delay line, so the examples of a fresh
  drift do not contaminate it before they are judged and a falling error (warm-up,
  recovery) simply lowers it;
* a **fast detector**: a one-sided Bernoulli CUSUM (upward Page-Hinkley on the
  log-likelihood ratio of *p_ref* against *p_ref + shift*), whose last reset marks
  the estimated onset;
* a **confirmation**: a one-sided z-test that the error rate since that onset
  exceeds the reference by at least ``min_shift``, over at least ``min_errors``
  errors, so a short burst of bad luck or a statistically real but tiny wobble of
  a model that keeps learning is not called drift;
* a **slow test** beside the fast one, for drift spread over thousands of
  examples, which the lagged reference follows and the fast detector therefore
  never sees: a second one-sided CUSUM of the same kind against the *best* error
  rate since the last baseline (the lowest value of a long exponentially weighted
  mean, ``slow_span``, of the same delayed stream), looking for a smaller rise
  (``slow_shift``, ``slow_rel_shift``), confirmed the same way; the reference's
  own uncertainty is part of the confirmation's standard error, so a lucky low
  stretch of a stationary stream is no baseline to alarm against; it starts
  watching ``slow_warmup`` examples after the warm-up, once its mean has forgotten
  the model's first examples (a learner's error while it converges is no
  baseline either: on static Hyperplane and noisy SEA the tree's error is lowest
  around its 2,000th example and settles higher, which the slow test took for a
  drift in 9 of 20 seeds);
* a **warm-up**: nothing is reported until the reference has seen
  ``warmup`` examples, at start, after each detection and after ``_reset()``.

It is a River :class:`~river.base.BinaryDriftDetector`: ``update`` returns
nothing and ``drift_detected`` says whether that update completed a detection;
the rise itself (:class:`ErrorRise`) is then :attr:`ErrorRiseDetector.last_drift`.

>>> import random
>>> rng = random.Random(7)
>>> det = ErrorRiseDetector()
>>> hits = []
>>> for i in range(8000):
...     det.update(rng.random() < (0.2 if i < 5000 else 0.5))
...     if det.drift_detected:
...         hits.append(i)
>>> len(hits), 5000 < hits[0] < 5400
(1, True)
>>> rise = ErrorRiseDetector(warmup=500)
>>> rise.warmup, rise.clone().warmup
(500, 500)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge, Gt, Lt

from driftline.drift_detectors.base import BinaryDriftDetector, DriftReport, ExplainsDrift

__all__ = ["ErrorRise", "ErrorRiseDetector"]


@dataclass(frozen=True)
class ErrorRise(DriftReport):
    """A confirmed rise: where it started, how large, how sure."""

    index: int
    """Index (0-based, since construction) of the example that completed the detection."""
    onset_index: int
    """Estimated index of the first example of the higher error rate."""
    reference_rate: float
    """Error rate before the rise."""
    recent_rate: float
    """Error rate since the onset."""
    z: float
    """The confirmation test's z."""
    test: str = "fast"
    """Which test fired: ``fast`` (against the lagged reference) or ``slow`` (against the
    best rate since the baseline: a gradual drift)."""


class ErrorRiseDetector(BinaryDriftDetector, ExplainsDrift):
    """Feed it 1 (wrong) / 0 (right) per labelled prediction; it reports confirmed rises.

    After a detection it re-baselines itself (a new warm-up on the new error level),
    so one abrupt drift gives one detection.  The parameters (River's convention:
    keyword arguments kept as attributes of the same name) are what the setting
    ``monitoring.detector: {type: error_rise, ...}`` takes; their defaults are what
    ``eval-drift`` measured.

    A detection is ``critical`` when the error rose by at least twice ``min_shift``,
    ``warning`` otherwise.  ``slow_span=0`` turns the slow test off (the fast test alone,
    as before it existed).
    """

    def __init__(
        self,
        warmup: Annotated[int, Ge(0)] = 3600,
        lag: Annotated[int, Ge(0)] = 400,
        reference_span: Annotated[int, Ge(1)] = 1000,
        min_shift: Annotated[float, Gt(0), Lt(1)] = 0.05,
        rel_shift: Annotated[float, Ge(0)] = 0.5,
        threshold: Annotated[float, Gt(0)] = 14.0,
        confirm_z: float = 3.0,
        min_errors: Annotated[int, Ge(1)] = 5,
        p_floor: Annotated[float, Gt(0), Lt(1)] = 0.005,
        slow_span: Annotated[int, Ge(0)] = 4000,
        slow_shift: Annotated[float, Gt(0), Lt(1)] = 0.02,
        slow_rel_shift: Annotated[float, Ge(0)] = 0.25,
        slow_warmup: Annotated[int, Ge(0)] = 4000,
    ) -> None:
        super().__init__()
        self.warmup = warmup
        """Examples the reference must have absorbed before any detection (after a reset too)."""
        self.lag = lag
        """The reference lags the stream by this many examples (the delay line's length)."""
        self.reference_span = reference_span
        """Effective memory of the reference's exponentially weighted mean, in examples."""
        self.min_shift = min_shift
        """Smallest absolute rise of the error rate that counts as drift."""
        self.rel_shift = rel_shift
        """Smallest rise relative to the reference (0.5: +50 %); the larger of the two applies."""
        self.threshold = threshold
        """CUSUM decision threshold on the log-likelihood ratio (false-alarm rate ~
        exp(-threshold))."""
        self.confirm_z = confirm_z
        """z the confirmation test must reach (one-sided)."""
        self.min_errors = min_errors
        """Fewest errors since the onset for a confirmation."""
        self.p_floor = p_floor
        """Floor of the reference error rate: for a model with no errors, one error is no
        alarm."""
        self.slow_span = slow_span
        """Memory, in examples, of the slow test's mean, whose lowest value since the
        baseline is its reference (0: no slow test)."""
        self.slow_shift = slow_shift
        """Smallest absolute rise the slow test looks for (and confirms)."""
        self.slow_rel_shift = slow_rel_shift
        """Smallest rise relative to the slow test's reference; the larger of the two applies."""
        self.slow_warmup = slow_warmup
        """Examples after the warm-up (at start and after each detection) before the slow
        test watches."""
        self.n = 0
        """Updates since construction."""
        self.detections = 0
        """Detections since construction."""
        self._reset()

    def _reset(self) -> None:
        """Forget the reference and the current detection; start a new warm-up."""
        super()._reset()
        self._last: ErrorRise | None = None
        self._rebaseline()

    def _rebaseline(self) -> None:
        self._delay: deque[int] = deque()
        self._ref_n = 0
        self._ref = 0.0
        self._fast_cusum = _Cusum(self.n)
        self._slow_mean = 0.0
        self._best: float | None = None
        self._slow = _Cusum(self.n)

    @property
    def last_drift(self) -> ErrorRise | None:
        """The rise the last update confirmed (set exactly when ``drift_detected`` is)."""
        return self._last

    @property
    def reference_rate(self) -> float | None:
        """The current reference error rate, or None during the warm-up."""
        return self._ref if self._ref_n >= self.warmup else None

    @property
    def watching(self) -> bool:
        """Whether the warm-up is over (a rise can be detected)."""
        return self._ref_n >= self.warmup

    @property
    def statistic(self) -> float:
        """The larger of the two tests' CUSUM values (0 when nothing is suspected; both
        fire at ``threshold``)."""
        return max(self._fast_cusum.statistic, self._slow.statistic)

    def update(self, x: bool | int) -> None:
        """Add one outcome (truthy: the prediction was wrong)."""
        self._drift_detected = False
        self._last = None
        e = 1 if x else 0
        index = self.n
        self.n += 1
        self._delay.append(e)
        if len(self._delay) > self.lag:
            old = self._delay.popleft()
            self._ref_n += 1
            alpha = max(1.0 / self.reference_span, 1.0 / self._ref_n)
            self._ref += alpha * (old - self._ref)
            if self.slow_span:
                self._slow_mean += max(1.0 / self.slow_span, 1.0 / self._ref_n) * (
                    old - self._slow_mean
                )
        if self._ref_n < self.warmup:
            return
        rise = self._fast(e, index)
        if rise is None and self.slow_span and self._ref_n >= self.warmup + self.slow_warmup:
            rise = self._slow_test(e, index)
        if rise is None:
            return
        self._last = rise
        self._drift_detected = True
        self.detections += 1
        self._rebaseline()

    def _fast(self, e: int, index: int) -> ErrorRise | None:
        """The fast test: CUSUM and confirmation against the lagged reference."""
        p0 = max(self._ref, self.p_floor)
        p1 = min(p0 + max(self.min_shift, self.rel_shift * p0), 0.999)
        cusum = self._fast_cusum
        if not cusum.add(e, index, p0, p1):
            return None
        se = math.sqrt(p0 * (1.0 - p0) / cusum.n)
        return self._confirmed(cusum, index, p0, self.min_shift, se, "fast")

    def _slow_test(self, e: int, index: int) -> ErrorRise | None:
        """The slow test: CUSUM and confirmation against the best rate since the baseline.

        Its reference only falls (a model that keeps learning lowers it), so a rise
        spread over more examples than the fast reference's memory adds up here.  The
        confirmation's standard error counts the reference's own (an exponentially
        weighted mean of span *s* has the variance of a mean of about 2*s* examples).
        """
        self._best = self._slow_mean if self._best is None else min(self._best, self._slow_mean)
        p0 = max(self._best, self.p_floor)
        shift = max(self.slow_shift, self.slow_rel_shift * p0)
        cusum = self._slow
        if not cusum.add(e, index, p0, min(p0 + shift, 0.999)):
            return None
        se = math.sqrt(p0 * (1.0 - p0) * (1.0 / cusum.n + 1.0 / (2 * self.slow_span)))
        return self._confirmed(cusum, index, p0, self.slow_shift, se, "slow")

    def _confirmed(
        self, cusum: _Cusum, index: int, p0: float, shift: float, se: float, test: str
    ) -> ErrorRise | None:
        """The rise ``cusum`` suspects, if its statistic reached the threshold over at least
        ``min_errors`` errors and the z-test (rate since the onset above ``p0 + shift``,
        standard error ``se``) confirms it."""
        if cusum.statistic < self.threshold or cusum.errors < self.min_errors:
            return None
        recent = cusum.errors / cusum.n
        z = (recent - p0 - shift) / se
        if z < self.confirm_z:
            return None
        return ErrorRise(
            statistic=cusum.statistic,
            threshold=self.threshold,
            window=cusum.n,
            severity="critical" if recent - p0 >= 2 * self.min_shift else "warning",
            index=index,
            onset_index=cusum.onset,
            reference_rate=p0,
            recent_rate=recent,
            z=z,
            test=test,
        )


class _Cusum:
    """A one-sided Bernoulli CUSUM (p0 against p1, which may move) and its run since the
    last reset: the estimated onset, examples and errors since."""

    def __init__(self, onset: int) -> None:
        self.statistic = 0.0
        self.onset = onset
        self.n = 0
        self.errors = 0

    def add(self, e: int, index: int, p0: float, p1: float) -> bool:
        """Add outcome ``index``; False when the statistic fell back to 0 (a new onset)."""
        self.statistic += math.log(p1 / p0) if e else math.log((1.0 - p1) / (1.0 - p0))
        if self.statistic <= 0.0:
            self.statistic = 0.0
            self.onset = index + 1
            self.n = 0
            self.errors = 0
            return False
        self.n += 1
        self.errors += e
        return True
