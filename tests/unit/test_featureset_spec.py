from __future__ import annotations

from pathlib import Path

import pytest

from driftline.specs import SpecError, load_featureset, parse_duration


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fs.yaml"
    p.write_text(text)
    return p


GOOD = """\
name: loans
version: 2
entity: customer
ttl: 30m
fields:
  loan: {type: float, min: 0}
  car: {type: string, allowed: [sedan, suv]}
aggregations:
  - {field: loan, fn: mean, window: 1h, hop: 5m}
  - {fn: count, window: 5m}
"""


def test_good_spec_loads_with_default_names(tmp_path: Path) -> None:
    spec = load_featureset(write(tmp_path, GOOD))
    assert spec.ttl == 1800
    assert spec.feature_names == ["loan", "car", "loan_mean_1h", "count_5m"]
    agg = spec.aggregations[0]
    assert (agg.window, agg.hop_s) == (3600, 300)
    assert spec.aggregations[1].hop_s == 300


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (GOOD.replace("fn: mean", "fn: median"), 9, "aggregations.0.fn"),
        (GOOD.replace("type: float", "type: decimal"), 6, "fields.loan.type"),
        (GOOD.replace("window: 1h, hop: 5m", "window: 1h, hop: 7m"), 9, "whole number of hops"),
        (GOOD.replace("field: loan, fn: mean", "field: salary, fn: mean"), 9, "'salary' is not"),
        (
            GOOD.replace("{type: string, allowed: [sedan, suv]}", "{type: string, min: 1}"),
            7,
            "numeric fields",
        ),
        (GOOD.replace("ttl: 30m", "ttl: soon"), 4, "not a duration"),
        (GOOD.replace("version: 2", "version: 0"), 2, "version"),
        (GOOD + "owner: me\n", 11, "owner"),
    ],
)
def test_bad_spec_names_file_line_and_reason(
    tmp_path: Path, text: str, line: int, needle: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_featureset(path)
    assert f"{path}:{line}:" in str(err.value)
    assert needle in str(err.value)


def test_count_on_string_field_is_allowed_but_mean_is_not(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("field: loan, fn: mean", "field: car, fn: mean"))
    with pytest.raises(SpecError, match="needs a numeric field"):
        load_featureset(path)


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1.5h") == 5400
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("5 minutes")
