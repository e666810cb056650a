"""Label types a feature set declares, and the check every label passes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from driftline.contracts.messages import DlqReason
from driftline.specs import (
    LabelSpec,
    ModelSpec,
    RecordRejected,
    SpecError,
    default_label_spec,
    load_featureset,
)

FEATURESET = """\
name: fs
version: 1
entity: e
fields:
  x: {type: float}
  n: {type: int}
{label}
"""


def _rejects(spec: LabelSpec, value: Any) -> RecordRejected:
    with pytest.raises(RecordRejected) as err:
        spec.check(value)
    return err.value


@pytest.mark.parametrize("good", [0, 1, True, False, 0.0, 1.0])
def test_binary_takes_zero_one_and_booleans(good: Any) -> None:
    assert LabelSpec(type="binary").check(good) == good


@pytest.mark.parametrize("bad", ["maybe", "1", 2, -1, 0.5, math.nan])
def test_binary_refuses_anything_else_as_a_constraint_violation(bad: Any) -> None:
    err = _rejects(LabelSpec(type="binary"), bad)
    assert err.reason is DlqReason.CONSTRAINT
    assert "binary" in err.detail and repr(bad) in err.detail


def test_binary_one_point_zero_is_learned_as_the_int_class() -> None:
    checked = LabelSpec(type="binary").check(1.0)
    assert checked == 1 and type(checked) is int


def test_named_classes_must_match_in_value_and_type() -> None:
    spec = LabelSpec(type="multiclass", classes=["low", "mid", "high"])
    assert spec.check("mid") == "mid"
    err = _rejects(spec, "urgent")
    assert err.reason is DlqReason.CONSTRAINT
    assert "not one of the declared classes" in err.detail
    typed = LabelSpec(type="binary", classes=[0, 1])
    _rejects(typed, True)  # a bool is not the int class 1 here: the tree would see two kinds


def test_multiclass_by_dtype_refuses_the_other_type() -> None:
    spec = LabelSpec(type="multiclass", dtype="int")
    assert spec.check(7) == 7
    assert _rejects(spec, "7").reason is DlqReason.SCHEMA
    assert _rejects(spec, True).reason is DlqReason.SCHEMA
    assert _rejects(spec, 2**70).reason is DlqReason.CONSTRAINT


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 10**400])
def test_regression_refuses_what_is_not_a_finite_number(bad: Any) -> None:
    err = _rejects(LabelSpec(type="regression"), bad)
    assert err.reason is DlqReason.CONSTRAINT
    assert "not a finite number" in err.detail


def test_regression_refuses_strings_and_booleans_and_values_out_of_range() -> None:
    spec = LabelSpec(type="regression", min=0, max=100)
    assert spec.check(42) == 42.0
    assert _rejects(spec, "42").reason is DlqReason.SCHEMA
    assert _rejects(spec, True).reason is DlqReason.SCHEMA
    assert "above the maximum 100" in _rejects(spec, 101).detail
    assert "below the minimum 0" in _rejects(spec, -0.5).detail


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("label: {type: binary, classes: [a, b, c]}", "a binary label has 2 classes, not 3"),
        ("label: {type: multiclass}", "names its classes"),
        ("label: {type: regression, classes: [1, 2]}", "has no classes"),
        ("label: {type: binary, min: 0}", "min/max apply to regression"),
        ("label: {type: ordinal}", "label.type"),
    ],
)
def test_a_bad_label_declaration_fails_at_load_with_its_line(
    tmp_path: Path, label: str, message: str
) -> None:
    path = tmp_path / "fs.yaml"
    path.write_text(FEATURESET.replace("{label}", label))
    with pytest.raises(SpecError) as err:
        load_featureset(path)
    assert message in str(err.value)
    assert f"{path}:7:" in str(err.value)


def test_a_feature_set_without_a_label_type_takes_any_finite_scalar(tmp_path: Path) -> None:
    path = tmp_path / "fs.yaml"
    path.write_text(FEATURESET.replace("{label}", ""))
    spec = load_featureset(path)
    assert spec.check_label("maybe") == "maybe"
    with pytest.raises(RecordRejected):
        spec.check_label(math.nan)


def test_a_model_of_another_task_than_its_feature_sets_labels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fs.yaml"
    path.write_text(FEATURESET.replace("{label}", "label: {type: regression}"))
    featureset = load_featureset(path)
    model = ModelSpec(
        name="m", featureset="fs", task="binary", pipeline=["tree.HoeffdingTreeClassifier"]
    )
    with pytest.raises(SpecError) as err:
        model.check_featureset(featureset)
    assert "binary model" in str(err.value) and "regression labels" in str(err.value)


def test_the_default_check_of_a_multiclass_model_follows_its_first_label() -> None:
    assert default_label_spec("multiclass", 3).check(4) == 4
    _rejects(default_label_spec("multiclass", 3), "four")
    assert default_label_spec("multiclass", "a").check("b") == "b"
    _rejects(default_label_spec("binary"), "maybe")
