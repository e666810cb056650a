"""PSI, KS, Jensen-Shannon and chi-square against values computed by hand."""

from __future__ import annotations

import math

import pytest

from driftline.monitoring.distances import chi_square, js_divergence, ks_binned, ks_critical, psi

pytestmark = pytest.mark.unit


def test_psi_matches_the_formula_by_hand() -> None:
    # proportions 0.5/0.5 -> 0.9/0.1: 0.4*ln(1.8) + (-0.4)*ln(0.2)
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert psi([50, 50], [90, 10]) == pytest.approx(expected)
    assert psi([10, 20, 70], [10, 20, 70]) == 0.0


def test_psi_of_an_empty_live_bin_stays_finite() -> None:
    value = psi([50, 50], [100, 0])
    assert math.isfinite(value) and value > 1.0


def test_ks_is_the_largest_cdf_gap() -> None:
    # CDFs 0.25/0.5/0.75/1 vs 0.5/1/1/1: largest gap 0.5 at the second bin.
    assert ks_binned([25, 25, 25, 25], [50, 50, 0, 0]) == pytest.approx(0.5)
    assert ks_binned([1, 1], [1, 1]) == 0.0
    # c(0.05) = 1.358 for n = m = 100: 1.358 * sqrt(2/100)
    assert ks_critical(100, 100, 0.05) == pytest.approx(1.3581 * math.sqrt(0.02), rel=1e-3)


def test_js_divergence_by_hand() -> None:
    assert js_divergence({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    assert js_divergence({"a": 3, "b": 1}, {"a": 6, "b": 2}) == pytest.approx(0.0)
    # p = (0.5, 0.5), q = (1, 0), m = (0.75, 0.25)
    expected = 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)) + 0.5 * (
        1.0 * math.log2(1.0 / 0.75)
    )
    assert js_divergence({"a": 1, "b": 1}, {"a": 1}) == pytest.approx(expected)


def test_chi_square_by_hand() -> None:
    stat, dof = chi_square({"a": 1, "b": 1}, {"a": 30, "b": 70})
    assert stat == pytest.approx((30 - 50) ** 2 / 50 + (70 - 50) ** 2 / 50)
    assert dof == 1


def test_mismatched_bins_are_refused() -> None:
    with pytest.raises(ValueError, match="bins differ"):
        psi([1, 2], [1, 2, 3])
