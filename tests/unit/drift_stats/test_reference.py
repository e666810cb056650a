"""Reference statistics training records and the monitor reads back."""

from __future__ import annotations

import pytest

from driftline.drift_stats import Reference, build_reference

pytestmark = pytest.mark.unit


def test_numeric_and_categorical_features_are_told_apart() -> None:
    rows = [
        {"x": float(i), "car": "suv" if i % 4 == 0 else "sedan", "flag": i % 2 == 0}
        for i in range(200)
    ]
    ref = build_reference(rows, bins=4)
    x = ref["features"]["x"]
    assert x["type"] == "numeric"
    assert x["counts"] == [50, 50, 50, 50]
    assert ref["features"]["car"] == {
        "type": "categorical",
        "frequencies": {"sedan": 150, "suv": 50},
    }
    assert ref["features"]["flag"]["type"] == "categorical"
    parsed = Reference.from_dict(ref)
    assert parsed.numeric["x"].bin_of(-1e9) == 0
    assert parsed.numeric["x"].bin_of(1e9) == 3


def test_a_malformed_reference_names_the_feature() -> None:
    bad = {"features": {"age": {"type": "numeric", "edges": [1, 2], "counts": [1]}}}
    with pytest.raises(ValueError, match="'age'"):
        Reference.from_dict(bad)
