"""Model specs: the example loads and builds; bad specs fail with file:line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from driftline.specs import LabelSpec, ModelSpec, SpecError, load_featureset, load_model_spec
from driftline.training.service import label_specs

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "models" / "loans.yaml"

GOOD = """\
name: m
featureset: loans
task: binary
pipeline:
  - preprocessing.StandardScaler
  - tree.HoeffdingAdaptiveTreeClassifier:
      grace_period: 50
      drift_detector: {drift.ADWIN: {delta: 0.01}}
metric: Accuracy
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_spec_loads_and_builds_a_fresh_tree() -> None:
    spec = load_model_spec(EXAMPLE)
    featureset = load_featureset(ROOT / "examples" / "featuresets" / "loans.yaml")
    spec.check_featureset(featureset)
    a, b = spec.build_pipeline(), spec.build_pipeline()
    assert type(a).__name__ == "HoeffdingAdaptiveTreeClassifier"
    assert a is not b
    a.learn_one({"salary": 1.0}, 1)
    assert b.predict_one({"salary": 1.0}) is None  # b did not learn from a's example


def test_nested_estimator_and_pipeline_are_built(tmp_path: Path) -> None:
    spec = load_model_spec(_write(tmp_path, GOOD))
    model = spec.build_pipeline()
    assert list(model.steps) == ["StandardScaler", "HoeffdingAdaptiveTreeClassifier"]
    tree = model["HoeffdingAdaptiveTreeClassifier"]
    assert type(tree.drift_detector).__name__ == "ADWIN"
    assert tree.drift_detector.delta == 0.01


def test_variadic_parameter_is_a_list(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  - preprocessing.StandardScaler\n",
        "  - compose.Select: {keys: [salary, age]}\n",
    )
    model = load_model_spec(_write(tmp_path, text)).build_pipeline()
    assert model["Select"].transform_one({"salary": 1, "age": 2, "car": 3}) == {
        "salary": 1,
        "age": 2,
    }


@pytest.mark.parametrize(
    ("old", "new", "line", "needle"),
    [
        (
            "  - preprocessing.StandardScaler\n",
            "  - os.System\n",
            5,
            "'os.System' is not an allowed",
        ),
        ("      grace_period: 50\n", "      grace_perod: 50\n", 7, "no parameter 'grace_perod'"),
        (
            "{drift.ADWIN: {delta: 0.01}}",
            "{builtins.Eval: {x: 1}}",
            8,
            "'builtins.Eval' is not an allowed",
        ),
        ("metric: Accuracy\n", "metric: Bogus\n", 9, "'Bogus' is not an allowed metric"),
        ("metric: Accuracy\n", "metric: MAE\n", 9, "MAE is a regression metric"),
    ],
)
def test_bad_spec_names_the_line(
    tmp_path: Path, old: str, new: str, line: int, needle: str
) -> None:
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(SpecError) as info:
        load_model_spec(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message, message
    assert needle in message


def test_transformer_only_before_the_estimator(tmp_path: Path) -> None:
    text = GOOD.replace("  - preprocessing.StandardScaler\n", "  - naive_bayes.GaussianNB\n")
    with pytest.raises(SpecError, match=r"spec.yaml:5: .*GaussianNB is not a transformer"):
        load_model_spec(_write(tmp_path, text))


def test_estimator_must_fit_the_task(tmp_path: Path) -> None:
    text = GOOD.replace("task: binary", "task: regression").replace(
        "metric: Accuracy", "metric: MAE\npromotion: {metric: MAE}"
    )
    with pytest.raises(
        SpecError, match=r"spec.yaml:6: pipeline.1: the last step must be a regressor"
    ):
        load_model_spec(_write(tmp_path, text))


def test_retraining_window_is_examples_or_duration() -> None:
    base = load_model_spec(EXAMPLE).model_dump()
    by_time = ModelSpec.model_validate(base | {"retraining": {"window": "6h"}})
    assert by_time.retraining.window_seconds == 6 * 3600
    assert by_time.retraining.window_examples is None
    assert load_model_spec(EXAMPLE).retraining.window_examples == 20000


def test_select_drops_unlisted_and_missing_features() -> None:
    spec = load_model_spec(EXAMPLE)
    x = spec.select({"salary": 50000.0, "age": None, "count_1h": 3})
    assert x == {"salary": 50000.0}


def test_training_takes_each_models_label_type_from_its_feature_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loans = load_model_spec(EXAMPLE)
    orphan = ModelSpec.model_validate(
        loans.model_dump() | {"name": "orphan", "featureset": "undeclared"}
    )
    featuresets = ROOT / "examples" / "featuresets"
    with caplog.at_level(logging.WARNING):
        labels = label_specs({"loans": loans, "orphan": orphan}, featuresets)
    assert labels["loans"] == LabelSpec(type="binary")
    assert labels["orphan"] is None  # the default check for its task
    assert "feature set undeclared is not declared in" in caplog.text

    # A feature set declaring labels of another task stops the service at start.
    regression = tmp_path / "featuresets"
    regression.mkdir()
    text = (featuresets / "loans.yaml").read_text()
    assert "label: {type: binary}" in text
    (regression / "loans.yaml").write_text(text.replace("{type: binary}", "{type: regression}"))
    with pytest.raises(SpecError, match="binary model, but feature set loans declares regression"):
        label_specs({"loans": loans}, regression)

    # No directory at all: every model gets its task's default, with a warning.
    assert label_specs({"loans": loans}, tmp_path / "nowhere") == {"loans": None}
    assert "training.featuresets_dir" in caplog.text


GBM = """\
name: loans-gbm
featureset: loans
task: binary
framework: sklearn
pipeline:
  - sklearn.preprocessing.StandardScaler
  - sklearn.ensemble.HistGradientBoostingClassifier: {max_iter: 20, learning_rate: 0.2}
"""


def test_a_sklearn_spec_builds_its_batch_trainer(tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    spec = load_model_spec(_write(tmp_path, GBM))
    assert (spec.framework, spec.retrainable, spec.online) == ("sklearn", True, False)
    model = spec.build_pipeline()
    assert isinstance(model, Pipeline)
    final = model.steps[-1][1]
    assert isinstance(final, HistGradientBoostingClassifier) and final.max_iter == 20


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (GBM.replace("sklearn.preprocessing.StandardScaler", "os.system"), 6,
         "'os.system' is not an allowed batch-trainer class"),
        (GBM.replace("max_iter: 20", "max_iters: 20"), 7, "has no parameter 'max_iters'"),
        (GBM.replace("HistGradientBoostingClassifier", "HistGradientBoostingRegressor"), 7,
         "the last step must be a classifier for task binary"),
        (GBM.replace("framework: sklearn", "framework: onnx"), 5, "framework onnx has no trainer"),
        (GBM.replace("framework: sklearn", "framework: python"), 1, "needs python_class"),
        (GBM.replace("pipeline:", "python_class: a.B\npipeline:"), 5, "is for framework python"),
    ],
    ids=["not-allowed", "bad-param", "wrong-task", "onnx-trainer", "python-no-class",
         "class-not-python"],
)  # fmt: skip
def test_a_bad_trainer_spec_names_the_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_model_spec(path)
    assert message in str(err.value)
    assert f"{path}:{line}:" in str(err.value)


def test_a_model_trained_elsewhere_has_a_spec_without_a_trainer(tmp_path: Path) -> None:
    onnx = load_model_spec(_write(tmp_path, "name: risk\nfeatureset: loans\ntask: binary\n"
                                  "framework: onnx\nclasses: [0, 1]\n"))  # fmt: skip
    assert (onnx.retrainable, onnx.classes) == (False, [0, 1])
    with pytest.raises(ValueError, match="cannot train it"):
        onnx.build_pipeline()
    river = "name: r\nfeatureset: loans\ntask: binary\n"
    with pytest.raises(SpecError, match="needs its pipeline"):
        load_model_spec(_write(tmp_path, river))
