"""CBPE: calibrated confidence as a label-free accuracy estimate, on cases with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from driftline.monitoring.performance_estimation import (
    Calibration,
    CBPEConfig,
    PerformanceEstimator,
    confidence_of,
)

pytestmark = pytest.mark.unit


def _reference(est: PerformanceEstimator, conf: np.ndarray, right: np.ndarray) -> None:
    completed = [est.add_reference(float(c), bool(r)) for c, r in zip(conf, right, strict=True)]
    assert completed.count(True) == 1 and completed[-1] and est.calibrated


def test_a_calibrated_models_estimate_tracks_its_true_accuracy() -> None:
    rng = np.random.default_rng(1)
    est = PerformanceEstimator(CBPEConfig(reference=3000, window=2000))
    conf = rng.uniform(0.5, 1.0, 3000)
    _reference(est, conf, rng.random(3000) < conf)  # right with probability = confidence
    # Later traffic is easier, then harder, than the reference: the estimate follows the
    # accuracy the labels (drawn here, never shown to the estimator) would show.
    # (Traffic piled at the very bottom of the reference's range is estimated less well:
    # an isotonic fit is least sure at its ends.)
    for shape in (lambda u: 0.5 + 0.5 * u**0.3, lambda u: 0.5 + 0.5 * u**1.5):
        served = shape(rng.random(2000))
        truth = float(np.mean(rng.random(2000) < served))
        for c in served:
            est.observe(float(c))
        assert est.estimate == pytest.approx(truth, abs=0.025)


def test_calibration_corrects_an_overconfident_model() -> None:
    rng = np.random.default_rng(2)
    est = PerformanceEstimator(CBPEConfig(reference=3000, window=2000))
    conf = rng.uniform(0.5, 1.0, 3000)
    # It says c and is right with probability c**4: 0.9 means right 66 % of the time.
    _reference(est, conf, rng.random(3000) < conf**4)
    served = rng.uniform(0.7, 1.0, 2000)
    truth = float(np.mean(rng.random(2000) < served**4))
    for c in served:
        est.observe(float(c))
    assert est.estimate == pytest.approx(truth, abs=0.03)
    assert float(np.mean(served)) - truth > 0.1  # the raw confidence would be far off


def _boundary_model(rng: np.random.Generator, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A logistic model (overconfident: slope 6 where the truth has 2) on 1-D inputs;
    returns its confidence in each prediction and whether the prediction was right."""
    served_p1 = 1 / (1 + np.exp(-6 * x))
    true_p1 = 1 / (1 + np.exp(-2 * x))
    prediction = served_p1 >= 0.5
    label = rng.random(len(x)) < true_p1
    return np.maximum(served_p1, 1 - served_p1), prediction == label


def test_a_shift_toward_the_decision_boundary_lowers_the_estimate_before_labels_arrive() -> None:
    rng = np.random.default_rng(3)
    cfg = CBPEConfig(reference=2000, window=500, margin=0.05)
    est = PerformanceEstimator(cfg)
    conf, right = _boundary_model(rng, rng.normal(0, 2, 2000))
    _reference(est, conf, right)
    assert est.reference_accuracy == pytest.approx(float(np.mean(right)))

    # From here on no label reaches the estimator: 5,000 predictions like the reference's,
    # then inputs crowd the boundary (x near 0), where the model is unsure and often wrong.
    steady, _ = _boundary_model(rng, rng.normal(0, 2, 5000))
    shifted, shifted_right = _boundary_model(rng, rng.normal(0, 0.3, 2000))
    alarms = [i for i, c in enumerate([*steady, *shifted]) if est.observe(float(c))]
    assert len(alarms) == 1 and 5000 <= alarms[0] < 5000 + cfg.window
    # Right to alarm: the accuracy the labels will show is well below the floor, and the
    # estimate says so without them.
    assert est.floor is not None and float(np.mean(shifted_right)) < est.floor
    assert est.estimate == pytest.approx(float(np.mean(shifted_right[-cfg.window :])), abs=0.06)


def test_stationary_predictions_never_alarm() -> None:
    rng = np.random.default_rng(4)
    est = PerformanceEstimator(CBPEConfig(reference=2000, window=1000, margin=0.05))
    conf, right = _boundary_model(rng, rng.normal(0, 2, 2000))
    _reference(est, conf, right)
    served, _ = _boundary_model(rng, rng.normal(0, 2, 100_000))
    assert not [i for i, c in enumerate(served) if est.observe(float(c))]
    assert est.estimate == pytest.approx(est.reference_accuracy, abs=0.03)


def test_one_drop_is_one_alarm_until_the_estimate_recovers() -> None:
    est = PerformanceEstimator(CBPEConfig(reference=4, window=10, margin=0.1))
    for c, r in [(0.5, False), (0.6, True), (0.9, True), (0.95, True)]:
        est.add_reference(c, r)
    fired = []
    for phase in (0.95, 0.5, 0.95, 0.5):
        fired.append(sum(est.observe(phase) is not None for _ in range(30)))
    assert fired == [0, 1, 0, 1]


def test_the_estimate_waits_for_the_reference_and_can_be_turned_off() -> None:
    est = PerformanceEstimator(CBPEConfig(reference=3, window=5))
    assert est.observe(0.9) is None and est.estimate is None and est.floor is None
    est.add_reference(0.9, True)
    est.add_reference(0.6, False)
    assert est.estimate is None
    assert est.add_reference(0.8, True)
    # The window held the confidences served before: a full estimate at once.
    assert est.estimate == 1.0
    assert not est.add_reference(0.1, False)  # the reference is the first ones only

    off = PerformanceEstimator(CBPEConfig(reference=0))
    assert not off.enabled and not off.add_reference(0.9, True)
    assert off.observe(0.9) is None and off.estimate is None


def test_calibration_is_monotone_clipped_and_matches_scikit_learns_interpolation() -> None:
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(5)
    conf = rng.uniform(0.4, 1.0, 500)
    right = rng.random(500) < conf
    cal = Calibration(list(conf), list(right))
    grid = np.linspace(0.0, 1.2, 301)
    ours = [cal(float(c)) for c in grid]
    theirs = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(conf, right)
    assert ours == pytest.approx(list(theirs.predict(grid)))
    assert all(b >= a for a, b in itertools.pairwise(ours))
    assert all(0.0 <= v <= 1.0 for v in ours)


def test_bad_inputs_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="2 confidences, 1 outcomes"):
        Calibration([0.5, 0.6], [True])
    with pytest.raises(ValueError, match=r"margin=1\.5"):
        CBPEConfig(margin=1.5)


@pytest.mark.parametrize(
    ("prediction", "probabilities", "expected"),
    [
        (1, {"0": 0.2, "1": 0.8}, 0.8),
        ("b", {"a": 0.3, "b": 0.3, "c": 0.4}, 0.3),  # the predicted class, not the max
        (True, {"no": 0.1, "yes": 0.9}, 0.9),  # named otherwise: the largest
        (1, {}, None),  # no probabilities served
        (None, {"0": 0.5}, None),
        (1, {"1": math.nan}, None),
    ],
)
def test_confidence_is_the_probability_served_for_the_predicted_class(
    prediction: object, probabilities: dict[str, float], expected: float | None
) -> None:
    assert confidence_of(prediction, probabilities) == expected  # type: ignore[arg-type]
