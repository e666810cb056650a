"""Distances between a live window and a reference distribution.

Numeric features are compared as histograms over the reference's bins (PSI and a
binned Kolmogorov-Smirnov statistic: the largest gap between the two CDFs at the
reference's cut points, a lower bound of the exact KS statistic); categorical
ones as frequency tables (Jensen-Shannon divergence, base 2, in ``[0, 1]``, and
Pearson's chi-square).

>>> round(psi([50, 50], [90, 10]), 4)
0.5108
>>> ks_binned([25, 25, 25, 25], [50, 50, 0, 0])
0.5
>>> js_divergence({"a": 1}, {"b": 1})
1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["chi_square", "js_divergence", "ks_binned", "ks_critical", "psi"]

PSI_EPSILON = 1e-4
"""Proportion given to an empty bin, so PSI stays finite."""


def _proportions(counts: Sequence[float], eps: float) -> list[float]:
    total = float(sum(counts))
    if total <= 0:
        raise ValueError("a histogram with no observations has no distribution")
    return [max(c / total, eps) for c in counts]


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = PSI_EPSILON) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` over the same bins.

    Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant.
    Empty bins count as ``eps`` of the mass.
    """
    if len(expected) != len(actual):
        raise ValueError(f"bins differ: {len(expected)} reference vs {len(actual)} live")
    e = _proportions(expected, eps)
    a = _proportions(actual, eps)
    return sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True))


def ks_binned(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Largest absolute difference of the two cumulative distributions over the same bins."""
    if len(expected) != len(actual):
        raise ValueError(f"bins differ: {len(expected)} reference vs {len(actual)} live")
    te, ta = float(sum(expected)), float(sum(actual))
    if te <= 0 or ta <= 0:
        raise ValueError("a histogram with no observations has no distribution")
    ce = ca = 0.0
    gap = 0.0
    for e, a in zip(expected, actual, strict=True):
        ce += e / te
        ca += a / ta
        gap = max(gap, abs(ce - ca))
    return gap


def ks_critical(n: int, m: int, alpha: float = 0.001) -> float:
    """Two-sample KS critical value ``c(alpha) * sqrt((n + m) / (n * m))`` (asymptotic)."""
    c = math.sqrt(-0.5 * math.log(alpha / 2.0))
    return c * math.sqrt((n + m) / (n * m))


def _distribution(freq: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(freq.values()))
    if total <= 0:
        raise ValueError("a frequency table with no observations has no distribution")
    return {k: v / total for k, v in freq.items()}


def js_divergence(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence (base 2) between two frequency tables; 0 same, 1 disjoint."""
    p = _distribution(expected)
    q = _distribution(actual)
    total = 0.0
    for k in p.keys() | q.keys():
        pk, qk = p.get(k, 0.0), q.get(k, 0.0)
        mk = 0.5 * (pk + qk)
        if pk > 0:
            total += 0.5 * pk * math.log2(pk / mk)
        if qk > 0:
            total += 0.5 * qk * math.log2(qk / mk)
    return max(0.0, min(1.0, total))


def chi_square(
    expected: Mapping[str, float], actual: Mapping[str, float], eps: float = 0.5
) -> tuple[float, int]:
    """Pearson's chi-square of live counts against the reference proportions, and its dof.

    Categories never seen in the reference get ``eps`` expected observations, so a
    new category counts heavily instead of dividing by zero.
    """
    p = _distribution(expected)
    n = float(sum(actual.values()))
    if n <= 0:
        raise ValueError("a frequency table with no observations has no distribution")
    keys = p.keys() | actual.keys()
    stat = 0.0
    for k in keys:
        exp = max(p.get(k, 0.0) * n, eps)
        stat += (actual.get(k, 0.0) - exp) ** 2 / exp
    return stat, max(len(keys) - 1, 1)
