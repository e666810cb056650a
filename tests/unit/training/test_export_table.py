"""The point-in-time export's table and arguments (no sockets; the equality with what
training joins is tested against a real broker in tests/integration/training)."""

from __future__ import annotations

import doctest
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import typer

from driftline.cli import features_export
from driftline.cli.features_export import parse_when
from driftline.contracts.messages import FeatureVector, ValidLabel
from driftline.offline import ExportError, examples_frame, resolve_model, write_table
from driftline.specs import SpecError
from driftline.training.label_join import JoinedExample
from driftline.training.learner import Prediction
from driftline.training.retrain import LabelChecker, check_window

ROOT = Path(__file__).resolve().parents[3]


def _examples(
    make_vector: Callable[..., FeatureVector], make_label: Callable[..., ValidLabel]
) -> list[JoinedExample[Prediction]]:
    return [
        JoinedExample(make_vector(0, values={"x": 1.5, "n": 3}), make_label(0, y=1), Prediction(),
                      None, None),
        JoinedExample(make_vector(1, values={"x": None}), make_label(1, y=0), Prediction(),
                      None, None),
    ]  # fmt: skip


def test_one_row_per_example_keys_features_then_label(
    make_vector: Callable[..., FeatureVector],
    make_label: Callable[..., ValidLabel],
    tmp_path: Path,
) -> None:
    frame = examples_frame(_examples(make_vector, make_label), ["x", "n"])
    assert list(frame.columns) == ["event_id", "entity_id", "event_time", "x", "n", "label"]
    assert frame["event_id"].tolist() == ["e0", "e1"]
    assert isinstance(frame["event_time"].dtype, pd.DatetimeTZDtype)
    assert str(frame["event_time"].dt.tz) == "UTC"
    assert frame["x"].iloc[0] == 1.5 and pd.isna(frame["x"].iloc[1])
    assert frame["n"].iloc[0] == 3 and pd.isna(frame["n"].iloc[1])  # absent: missing
    assert frame["label"].tolist() == [1, 0]
    for name in ("train.parquet", "train.csv"):
        write_table(frame, tmp_path / "out" / name)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "train.parquet"), frame)
    assert (
        (tmp_path / "out" / "train.csv")
        .read_text()
        .startswith("event_id,entity_id,event_time,x,n,label\n")
    )


def test_a_feature_named_like_an_export_column_is_refused(
    make_vector: Callable[..., FeatureVector], make_label: Callable[..., ValidLabel]
) -> None:
    with pytest.raises(ExportError, match="label clash"):
        examples_frame(_examples(make_vector, make_label), ["x", "label"])


def test_the_label_check_and_window_are_trainings(
    make_vector: Callable[..., FeatureVector], make_label: Callable[..., ValidLabel]
) -> None:
    rows = [
        *_examples(make_vector, make_label),
        JoinedExample(make_vector(2), make_label(2, y="maybe"), Prediction(), None, None),
        JoinedExample(make_vector(3, featureset="other"), make_label(3), Prediction(), None, None),
        JoinedExample(make_vector(4), make_label(4, y=float("nan")), Prediction(), None, None),
        JoinedExample(make_vector(5), make_label(5, y=1.0), Prediction(), None, None),
    ]
    out: list[str] = []
    kept = check_window(
        rows, "loans", LabelChecker("binary"), lambda ex, _: out.append(ex.event_id)
    )
    assert [ex.event_id for ex in kept] == ["e0", "e1", "e5"]
    assert kept[-1].label.label == 1 and type(kept[-1].label.label) is int  # as training learns it
    assert out == ["e2", "e4"]
    # Exported for no model and a feature set that declares no label type: any finite scalar.
    anything = check_window(rows, "loans", LabelChecker(None))
    assert [ex.event_id for ex in anything] == ["e0", "e1", "e2", "e5"]


def test_a_model_is_found_by_name_or_path_and_an_unknown_one_is_named(tmp_path: Path) -> None:
    models = ROOT / "examples" / "models"
    spec = resolve_model("loans", models)
    assert spec is not None and spec.name == "loans"
    gbm = resolve_model(str(models / "batch" / "loans-gbm.yaml"), models)
    assert gbm is not None and gbm.framework == "sklearn"
    with pytest.raises(ExportError, match=r"no model spec named 'nope' in .* \(there: loans\)"):
        resolve_model("nope", models)
    with pytest.raises(ExportError, match=r"missing\.yaml not found"):
        resolve_model(str(tmp_path / "missing.yaml"), models)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nfeatureset: loans\ntask: binary\nframework: sklearn\n"
                      "pipeline: [os.system]\n")  # fmt: skip
    with pytest.raises(SpecError, match=r"broken.yaml:5: pipeline.0: 'os.system' is not"):
        resolve_model(str(broken), models)


def test_since_and_until_take_iso_times_or_durations_ago() -> None:
    now = datetime(2026, 5, 2, 12, tzinfo=UTC)
    assert parse_when("2026-05-01T10:00:00Z", "--since") == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert parse_when("6h", "--since", now) == datetime(2026, 5, 2, 6, tzinfo=UTC)
    assert parse_when(None, "--until") is None
    with pytest.raises(typer.BadParameter, match="'yesterday' is neither"):
        parse_when("yesterday", "--since")
    result = doctest.testmod(features_export)
    assert result.attempted > 0 and result.failed == 0
