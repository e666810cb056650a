"""Label-free accuracy of a classifier: confidence-based performance estimation (CBPE).

Labels often come hours or days after the prediction; until then the live error
stream is silent.  CBPE (the method of NannyML's ``CBPE``, implemented here
without depending on NannyML) estimates the accuracy of the predictions being
served *now* from the probabilities the model served with them:

1. **Calibrate** on a reference window of labelled predictions: fit the
   probability that a prediction is right as a monotone function of the model's
   confidence in it (the probability it gave its predicted class), with isotonic
   regression.  Models are rarely calibrated (a Hoeffding tree says 0.99 where
   it is right 90 % of the time); the fitted map corrects that without assuming a
   shape, and isotonic regression is NannyML's choice as well.
2. **Estimate**: the expected accuracy of a window of predictions is the mean of
   their calibrated confidences: each prediction is right with probability
   ``calibrated(confidence)``, and the mean of those probabilities is the
   expected fraction right.  No label is needed.

What it can and cannot see: the estimate moves when the *inputs* move into
regions where the model is less (or more) sure — covariate shift toward its
decision boundary, a new population it has little evidence on.  It assumes the
calibration map, ``P(right | confidence)``, still holds; pure concept drift
(``P(y | x)`` changes while the inputs and hence the confidences stay the same)
leaves the estimate where it was.  It is an early warning beside the label-based
detector, not a replacement for it.  An isotonic fit is least sure at the ends of the
reference's confidence range: traffic piled up at the least confident end is
estimated a few points low.

The fit uses scikit-learn's :class:`~sklearn.isotonic.IsotonicRegression`
(pool-adjacent-violators); each prediction is then calibrated by a binary search
in the fitted thresholds with the same linear interpolation, so the hot path does
not pay scikit-learn's per-call overhead.

>>> est = PerformanceEstimator(CBPEConfig(reference=4, window=2, margin=0.2))
>>> for conf, right in [(0.6, False), (0.7, True), (0.9, True), (0.95, True)]:
...     _ = est.add_reference(conf, right)
>>> est.reference_accuracy, est.calibrated
(0.75, True)
>>> est.observe(0.95), round(est.estimate or 0, 3)
(None, 1.0)
>>> alarm = est.observe(0.6)  # half the window is now where the model is often wrong
>>> alarm.estimate, round(alarm.floor, 2), alarm.severity
(0.5, 0.55, 'warning')
>>> est.observe(0.6) is None  # the same drop does not alarm again until it recovers
True
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression

from driftline.contracts.messages import LabelValue

__all__ = [
    "CBPEConfig",
    "Calibration",
    "EstimateAlarm",
    "PerformanceEstimator",
    "confidence_of",
]


def confidence_of(
    prediction: LabelValue | None, probabilities: Mapping[str, float]
) -> float | None:
    """The model's confidence in ``prediction``: the probability it served for that class.

    Classes are named by strings on the prediction log, so the predicted class is
    looked up by ``str(prediction)``; when it is not among them (a model naming its
    classes otherwise), the largest probability, which is the predicted class's
    for any arg-max classifier.  None without probabilities (a regressor, a model
    that serves none) or without a prediction: such records have no estimate.
    """
    if prediction is None or not probabilities:
        return None
    p = probabilities.get(str(prediction))
    if p is None:
        p = max(probabilities.values())
    return float(p) if math.isfinite(p) else None


class Calibration:
    """``P(right | confidence)``, fitted by isotonic regression on labelled predictions.

    Monotone non-decreasing and within [0, 1]; confidences outside the fitted
    range take the value at its nearest end (scikit-learn's ``out_of_bounds="clip"``).
    """

    def __init__(self, confidences: Sequence[float], correct: Sequence[bool]) -> None:
        if len(confidences) != len(correct) or not confidences:
            raise ValueError(
                f"calibration needs as many outcomes as confidences, at least one "
                f"(got {len(confidences)} confidences, {len(correct)} outcomes)"
            )
        fit = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        fit.fit(np.asarray(confidences, dtype=float), np.asarray(correct, dtype=float))
        self.thresholds: list[float] = [float(x) for x in fit.X_thresholds_]
        self.values: list[float] = [float(y) for y in fit.y_thresholds_]

    def __call__(self, confidence: float) -> float:
        """The calibrated probability that a prediction made with ``confidence`` is right."""
        xs, ys = self.thresholds, self.values
        i = bisect.bisect_right(xs, confidence)
        if i == 0:
            return ys[0]
        if i == len(xs):
            return ys[-1]
        x0, x1 = xs[i - 1], xs[i]
        return ys[i - 1] + (ys[i] - ys[i - 1]) * (confidence - x0) / (x1 - x0)


@dataclass(frozen=True)
class CBPEConfig:
    """How much reference, how long a window, how big a drop alarms."""

    reference: int = 2000
    """Labelled predictions the calibration is fitted on (0 disables the estimator)."""
    window: int = 1000
    """Recent predictions the estimate is the mean over."""
    margin: float = 0.05
    """Alarm when the estimate falls more than this below the reference accuracy."""

    def __post_init__(self) -> None:
        if self.reference < 0 or self.window < 1 or not 0 < self.margin < 1:
            raise ValueError(
                f"CBPE needs reference >= 0, window >= 1 and 0 < margin < 1 (got "
                f"reference={self.reference}, window={self.window}, margin={self.margin})"
            )


@dataclass(frozen=True)
class EstimateAlarm:
    """The estimate fell below the floor (reference accuracy minus the margin)."""

    estimate: float
    floor: float
    reference_accuracy: float
    window: int
    severity: Literal["warning", "critical"]
    """``critical`` when the drop is more than twice the margin."""


class PerformanceEstimator:
    """CBPE of one model's served predictions; no I/O.

    Feed it the first ``config.reference`` labelled predictions
    (:meth:`add_reference`) and every served prediction (:meth:`observe`); the
    window keeps the raw confidences from the start, so the estimate covers a full
    window as soon as the calibration is fitted.  One drop is one alarm: after
    firing, it re-arms only once the estimate has come back above the floor plus
    half the margin.
    """

    def __init__(self, config: CBPEConfig | None = None) -> None:
        self.config = config or CBPEConfig()
        self._ref_conf: list[float] = []
        self._ref_right: list[bool] = []
        self.calibration: Calibration | None = None
        self.reference_accuracy: float | None = None
        self._window: deque[float] = deque(maxlen=self.config.window)
        self._sum = 0.0
        self._since_resum = 0
        self._armed = True

    @property
    def calibrated(self) -> bool:
        """Whether the reference is complete and the calibration fitted."""
        return self.calibration is not None

    @property
    def enabled(self) -> bool:
        """False when ``config.reference`` is 0: no estimate is ever made."""
        return self.config.reference > 0

    @property
    def estimate(self) -> float | None:
        """Estimated accuracy of the last ``window`` predictions; None until calibrated."""
        if self.calibration is None or not self._window:
            return None
        return min(1.0, max(0.0, self._sum / len(self._window)))

    @property
    def floor(self) -> float | None:
        """The estimate below which :meth:`observe` alarms; None until calibrated."""
        if self.reference_accuracy is None:
            return None
        return self.reference_accuracy - self.config.margin

    def add_reference(self, confidence: float, correct: bool) -> bool:
        """One labelled prediction of the reference; True when it completed the calibration.

        Ignored once the calibration is fitted (the reference is the first ones only).
        """
        if self.calibration is not None or not self.enabled:
            return False
        self._ref_conf.append(confidence)
        self._ref_right.append(correct)
        if len(self._ref_conf) < self.config.reference:
            return False
        cal = Calibration(self._ref_conf, self._ref_right)
        self.calibration = cal
        # Isotonic regression preserves the mean: the estimate on the reference itself is
        # exactly its observed accuracy, so the floor compares like with like.
        self.reference_accuracy = sum(self._ref_right) / len(self._ref_right)
        self._ref_conf, self._ref_right = [], []
        self._resum()
        return True

    def observe(self, confidence: float) -> EstimateAlarm | None:
        """One served prediction's confidence; the alarm it completes, if any."""
        if not self.enabled:
            return None
        cal = self.calibration
        if len(self._window) == self._window.maxlen and cal is not None:
            self._sum -= cal(self._window[0])
        self._window.append(confidence)
        if cal is None:
            return None
        self._sum += cal(confidence)
        self._since_resum += 1
        if self._since_resum >= self.config.window:
            self._resum()  # no rounding error piles up over millions of updates
        if len(self._window) < self.config.window:
            return None
        estimate, floor, ref = self.estimate, self.floor, self.reference_accuracy
        assert estimate is not None and floor is not None and ref is not None
        if not self._armed:
            if estimate >= floor + self.config.margin / 2:
                self._armed = True
            return None
        if estimate >= floor:
            return None
        self._armed = False
        drop = ref - estimate
        return EstimateAlarm(
            estimate=estimate,
            floor=floor,
            reference_accuracy=ref,
            window=len(self._window),
            severity="critical" if drop > 2 * self.config.margin else "warning",
        )

    def _resum(self) -> None:
        cal = self.calibration
        self._sum = sum(cal(c) for c in self._window) if cal is not None else 0.0
        self._since_resum = 0
