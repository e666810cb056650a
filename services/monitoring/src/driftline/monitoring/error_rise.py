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
* a **warm-up**: nothing is reported until the reference has seen
  ``warmup`` examples, at start and after every :meth:`rebaseline`.

>>> import random
>>> rng = random.Random(7)
>>> det = ErrorRiseDetector()
>>> stream = [rng.random() < (0.2 if i < 5000 else 0.5) for i in range(8000)]
>>> hits = [i for i, e in enumerate(stream) if det.update(e) is not None]
>>> len(hits), 5000 < hits[0] < 5400
(1, True)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["ErrorRise", "ErrorRiseConfig", "ErrorRiseDetector"]


@dataclass(frozen=True)
class ErrorRiseConfig:
    """Tuning of :class:`ErrorRiseDetector`; the defaults are what ``eval-drift`` measured."""

    warmup: int = 3600
    """Examples the reference must have absorbed before any detection (after a re-baseline too)."""
    lag: int = 400
    """The reference lags the stream by this many examples (the delay line's length)."""
    reference_span: int = 1000
    """Effective memory of the reference's exponentially weighted mean, in examples."""
    min_shift: float = 0.05
    """Smallest absolute rise of the error rate that counts as drift."""
    rel_shift: float = 0.5
    """Smallest rise relative to the reference (0.5: +50 %); the larger of the two applies."""
    threshold: float = 14.0
    """CUSUM decision threshold on the log-likelihood ratio (false-alarm rate ~ exp(-threshold))."""
    confirm_z: float = 3.0
    """z the confirmation test must reach (one-sided)."""
    min_errors: int = 5
    """Fewest errors since the onset for a confirmation."""
    p_floor: float = 0.005
    """Floor of the reference error rate: for a model with no errors, one error is no alarm."""


@dataclass(frozen=True)
class ErrorRise:
    """A confirmed rise: where it started, how large, how sure."""

    index: int
    """Index (0-based, since construction) of the example that completed the detection."""
    onset_index: int
    """Estimated index of the first example of the higher error rate."""
    statistic: float
    """CUSUM value at detection."""
    threshold: float
    """The CUSUM threshold it crossed."""
    window: int
    """Examples since the onset."""
    reference_rate: float
    """Error rate before the rise."""
    recent_rate: float
    """Error rate since the onset."""
    z: float
    """The confirmation test's z."""


class ErrorRiseDetector:
    """Feed it 1 (wrong) / 0 (right) per labelled prediction; it reports confirmed rises.

    After a detection it re-baselines itself (a new warm-up on the new error level),
    so one abrupt drift gives one detection.
    """

    def __init__(self, config: ErrorRiseConfig | None = None) -> None:
        self.config = config or ErrorRiseConfig()
        self.n = 0
        self.detections = 0
        self.rebaseline()

    def rebaseline(self) -> None:
        """Forget the reference and start a new warm-up (call when a new model takes over)."""
        self._delay: deque[int] = deque()
        self._ref_n = 0
        self._ref = 0.0
        self._cusum = 0.0
        self._onset = self.n
        self._run_n = 0
        self._run_errors = 0

    @property
    def reference_rate(self) -> float | None:
        """The current reference error rate, or None during the warm-up."""
        return self._ref if self._ref_n >= self.config.warmup else None

    @property
    def statistic(self) -> float:
        """The current CUSUM value (0 when nothing is suspected)."""
        return self._cusum

    def update(self, error: bool | int) -> ErrorRise | None:
        """Add one outcome; returns the detection it completes, if any."""
        cfg = self.config
        e = 1 if error else 0
        index = self.n
        self.n += 1
        self._delay.append(e)
        if len(self._delay) > cfg.lag:
            old = self._delay.popleft()
            self._ref_n += 1
            alpha = max(1.0 / cfg.reference_span, 1.0 / self._ref_n)
            self._ref += alpha * (old - self._ref)
        if self._ref_n < cfg.warmup:
            return None
        p0 = max(self._ref, cfg.p_floor)
        p1 = min(p0 + max(cfg.min_shift, cfg.rel_shift * p0), 0.999)
        step = math.log(p1 / p0) if e else math.log((1.0 - p1) / (1.0 - p0))
        self._cusum += step
        if self._cusum <= 0.0:
            self._cusum = 0.0
            self._onset = index + 1
            self._run_n = 0
            self._run_errors = 0
            return None
        self._run_n += 1
        self._run_errors += e
        if self._cusum < cfg.threshold or self._run_errors < cfg.min_errors:
            return None
        recent = self._run_errors / self._run_n
        se = math.sqrt(p0 * (1.0 - p0) / self._run_n)
        z = (recent - p0 - cfg.min_shift) / se
        if z < cfg.confirm_z:
            return None
        found = ErrorRise(
            index=index,
            onset_index=self._onset,
            statistic=self._cusum,
            threshold=cfg.threshold,
            window=self._run_n,
            reference_rate=p0,
            recent_rate=recent,
            z=z,
        )
        self.detections += 1
        self.rebaseline()
        return found
