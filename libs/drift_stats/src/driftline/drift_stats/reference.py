"""Reference statistics: the distribution a model was trained on, recorded with its version.

Training calls :func:`build_reference` on its training vectors and stores the
result (plain JSON) in the registered version's spec under ``"reference"``; the
monitor compares live windows against the champion's reference.

The dict form::

    {"count": 1000,
     "features": {
        "salary": {"type": "numeric", "edges": [c1, ..., ck-1], "counts": [n1, ..., nk]},
        "car":    {"type": "categorical", "frequencies": {"sedan": 412, "suv": 588}}}}

Numeric ``edges`` are interior cut points (quantiles of the training data); bin
``i`` holds values in ``(edges[i-1], edges[i]]``, the outer bins are open-ended.

>>> ref = build_reference([{"x": float(i), "c": "a" if i % 2 else "b"} for i in range(100)], bins=4)
>>> ref["features"]["x"]["counts"], ref["features"]["c"]["frequencies"]
([25, 25, 25, 25], {'a': 50, 'b': 50})
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from driftline.contracts.messages import FeatureValue

__all__ = [
    "CategoricalReference",
    "NumericReference",
    "Reference",
    "build_reference",
    "is_numeric",
]


def is_numeric(value: FeatureValue) -> bool:
    """True for finite ints and floats (bools are categories, not numbers)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class NumericReference:
    """Histogram of a numeric feature over fixed bins."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def bin_of(self, value: float) -> int:
        """Index of the bin ``value`` falls in."""
        return bisect.bisect_left(self.edges, value)


@dataclass(frozen=True)
class CategoricalReference:
    """Frequency table of a categorical feature."""

    frequencies: dict[str, int]


@dataclass(frozen=True)
class Reference:
    """Per-feature reference distributions (parsed, validated form of the dict)."""

    count: int
    numeric: dict[str, NumericReference] = field(default_factory=dict)
    categorical: dict[str, CategoricalReference] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        """Parse the dict form; :class:`ValueError` says which feature is malformed."""
        numeric: dict[str, NumericReference] = {}
        categorical: dict[str, CategoricalReference] = {}
        features = data.get("features")
        if not isinstance(features, Mapping):
            raise ValueError("reference has no 'features' mapping")
        for name, spec in features.items():
            kind = spec.get("type") if isinstance(spec, Mapping) else None
            if kind == "numeric":
                edges = tuple(float(e) for e in spec["edges"])
                counts = tuple(int(c) for c in spec["counts"])
                if len(counts) != len(edges) + 1 or list(edges) != sorted(edges):
                    raise ValueError(
                        f"reference feature {name!r}: need sorted edges and len(edges)+1 counts"
                    )
                if sum(counts) <= 0:
                    raise ValueError(f"reference feature {name!r}: no observations")
                numeric[name] = NumericReference(edges, counts)
            elif kind == "categorical":
                freq = {str(k): int(v) for k, v in spec["frequencies"].items()}
                if sum(freq.values()) <= 0:
                    raise ValueError(f"reference feature {name!r}: no observations")
                categorical[name] = CategoricalReference(freq)
            else:
                raise ValueError(
                    f"reference feature {name!r}: type must be 'numeric' or 'categorical'"
                )
        return cls(int(data.get("count", 0)), numeric, categorical)


def _quantile_edges(values: list[float], bins: int) -> list[float]:
    ordered = sorted(values)
    n = len(ordered)
    edges: list[float] = []
    for i in range(1, bins):
        # Lower quantile (an observed value), so a bin is "(prev, edge]".
        q = ordered[min(n - 1, max(0, math.ceil(i * n / bins) - 1))]
        if not edges or q > edges[-1]:
            edges.append(q)
    return edges


def build_reference(
    vectors: Iterable[Mapping[str, FeatureValue]], bins: int = 10
) -> dict[str, Any]:
    """Reference statistics of training vectors, as the JSON-able dict the registry stores.

    A feature is numeric when every non-null value is a finite number, otherwise
    categorical (values as strings).  Numeric features get up to ``bins``
    equal-frequency bins (fewer when values repeat).
    """
    if bins < 2:
        raise ValueError("bins must be at least 2")
    rows = list(vectors)
    columns: dict[str, list[FeatureValue]] = {}
    for row in rows:
        for k, v in row.items():
            if v is not None:
                columns.setdefault(k, []).append(v)
    features: dict[str, Any] = {}
    for name, values in sorted(columns.items()):
        if all(is_numeric(v) for v in values):
            nums = [float(v) for v in values if v is not None and not isinstance(v, str)]
            edges = _quantile_edges(nums, bins)
            counts = [0] * (len(edges) + 1)
            for v in nums:
                counts[bisect.bisect_left(edges, v)] += 1
            features[name] = {"type": "numeric", "edges": edges, "counts": counts}
        else:
            features[name] = {
                "type": "categorical",
                "frequencies": dict(sorted(Counter(str(v) for v in values).items())),
            }
    return {"count": len(rows), "features": features}
