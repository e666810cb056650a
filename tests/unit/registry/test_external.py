"""Registering from outside, on the caller's side: the spec built from a fitted object or
read from YAML, the estimator checked against it before upload, library versions recorded."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from driftline.cli.registry_views import prepare_registration
from driftline.contracts.errors import InvalidArgumentError
from driftline.registry_api.models import SKLEARN_INPUT_TAG
from driftline.registry_client.external import (
    TrainedOn,
    library_versions,
    prepare_artifact,
    prepare_object,
    spec_for,
)
from driftline.specs import SpecError

from .fitted_models import (
    FEATURES,
    lightgbm_model,
    loans_xy,
    onnx_per_feature,
    pickled,
    sklearn_frame,
    sklearn_logistic,
    write_featuresets,
    xgboost_model,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def featuresets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_featuresets(tmp_path_factory.mktemp("featuresets"))


def test_a_dataframe_fitted_estimator_brings_its_features_and_library_versions() -> None:
    got = prepare_object(
        spec_for("m", featureset="loans", task="binary", framework="sklearn"), sklearn_frame()
    )
    assert got.spec.features == ["salary", "age", "loan", "hvalue", "elevel"]
    assert got.tags == {SKLEARN_INPUT_TAG: "dataframe"}
    assert got.artifact_format == "sklearn-pickle"
    assert got.library_versions["scikit-learn"] == importlib.metadata.version("scikit-learn")
    assert got.library_versions["numpy"] == np.__version__
    assert "lightgbm" not in got.library_versions


def test_lightgbm_and_xgboost_record_their_own_versions() -> None:
    lgbm = prepare_object(
        spec_for("m", featureset="loans", task="binary", framework="sklearn"), lightgbm_model()
    )
    assert lgbm.library_versions["lightgbm"] == importlib.metadata.version("lightgbm")
    assert lgbm.spec.features == FEATURES
    xgb_spec = spec_for(
        "m", featureset="loans", task="binary", framework="sklearn", features=FEATURES
    )
    xgb = prepare_object(xgb_spec, xgboost_model())
    assert xgb.library_versions["xgboost"] == importlib.metadata.version("xgboost-cpu")
    assert xgb.tags == {SKLEARN_INPUT_TAG: "array"}


def test_an_estimator_that_does_not_fit_its_spec_is_refused_before_upload(
    featuresets: Path,
) -> None:
    model = sklearn_logistic()  # fitted on a 9-column array
    base = {"featureset": "loans", "task": "binary", "framework": "sklearn"}
    with pytest.raises(InvalidArgumentError, match="lists no features"):
        prepare_object(spec_for("m", **base), model)  # type: ignore[arg-type]
    # With the feature set known, its 16 features are what the spec means: too many.
    with pytest.raises(InvalidArgumentError, match="fitted on 9 columns but the spec lists 16"):
        prepare_object(spec_for("m", **base), model, featuresets=featuresets)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="fitted on 9 columns but the spec lists 3"):
        prepare_object(spec_for("m", features=["salary", "age", "loan"], **base), model)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="column 'elevel', which the spec's features"):
        prepare_object(
            spec_for("m", features=["salary", "age", "loan", "hvalue"], **base),  # type: ignore[arg-type]
            sklearn_frame(),
        )
    with pytest.raises(InvalidArgumentError, match=r"is a classifier .* task is regression"):
        prepare_object(
            spec_for(
                "m", featureset="loans", task="regression", framework="sklearn", features=FEATURES
            ),
            model,
        )
    with pytest.raises(InvalidArgumentError, match=r"predicts \[0, 1\]"):
        prepare_object(spec_for("m", features=FEATURES, classes=["no", "yes"], **base), model)  # type: ignore[arg-type]


def test_a_string_feature_is_refused_for_an_array_fitted_estimator(featuresets: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = loans_xy()
    model = LogisticRegression().fit(x[:, :3], y)
    shops = spec_for(
        "m",
        featureset="shops",
        task="binary",
        framework="sklearn",
        features=["amount", "city", "items"],
    )
    with pytest.raises(
        InvalidArgumentError, match="feature 'city' is a string in feature set shops"
    ):
        prepare_object(shops, model, featuresets=featuresets)


def test_onnx_objects_record_the_converter_and_per_feature_inputs_become_features() -> None:
    import onnx
    from skl2onnx import to_onnx

    x, _ = loans_xy()
    proto = to_onnx(sklearn_logistic(), x[:1].astype(np.float32), options={"zipmap": False})
    got = prepare_object(
        spec_for("m", featureset="loans", task="binary", framework="onnx", features=FEATURES), proto
    )
    assert got.artifact_format == "onnx"
    assert got.library_versions["skl2onnx"] == importlib.metadata.version("skl2onnx")
    assert got.library_versions["onnx"] == onnx.__version__
    assert got.library_versions["onnxruntime"] == importlib.metadata.version("onnxruntime")
    per_feature = onnx_per_feature({"salary": TensorProto.DOUBLE, "age": TensorProto.INT64})
    got = prepare_artifact(
        spec_for("m", featureset="loans", task="binary", framework="onnx"), per_feature
    )
    assert got.spec.features == ["salary", "age"]
    with pytest.raises(InvalidArgumentError, match="not an ONNX model"):
        prepare_artifact(
            spec_for("m", featureset="loans", task="binary", framework="onnx"), b"\xff\xfe garbage"
        )


def test_a_spec_the_model_spec_rules_refuse_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match="python_class: framework python needs"):
        spec_for("m", featureset="loans", task="binary", framework="python")
    with pytest.raises(InvalidArgumentError, match="name: String should match pattern"):
        spec_for("Bad Name", featureset="loans", task="binary", framework="onnx")


def test_trained_on_becomes_the_lineage() -> None:
    lineage = TrainedOn(export="train.parquet", examples=4800).lineage("loans", 1)
    assert (lineage.featureset, lineage.featureset_version, lineage.examples) == ("loans", 1, 4800)
    assert library_versions("sklearn")["scikit-learn"] == importlib.metadata.version("scikit-learn")


# -- the CLI's side: a spec file and an artifact file -----------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_the_cli_reads_the_spec_and_checks_the_file(tmp_path: Path, featuresets: Path) -> None:
    artifact = tmp_path / "model.pkl"
    artifact.write_bytes(pickled(sklearn_logistic()))
    good = _write(
        tmp_path,
        "name: risk\nfeatureset: loans\ntask: binary\nframework: sklearn\n"
        f"features: [{', '.join(FEATURES)}]\n",
    )
    got = prepare_registration(
        "risk", good, artifact, framework="sklearn", featuresets_dir=featuresets
    )
    assert (got.framework, got.artifact_format, got.spec.features) == (
        "sklearn",
        "sklearn-pickle",
        FEATURES,
    )

    with pytest.raises(
        SpecError, match=r"spec\.yaml:1: name: the spec is for model 'risk', not 'loans'"
    ):
        prepare_registration("loans", good, artifact)
    with pytest.raises(SpecError, match=r"spec\.yaml:4: framework: the spec says framework 'sk"):
        prepare_registration("risk", good, artifact, framework="onnx")
    bad = _write(
        tmp_path,
        "name: risk\nfeatureset: loans\ntask: binary\nframework: sklearn\npython_class: a.B\n",
    )
    with pytest.raises(
        SpecError, match=r"spec\.yaml:5: python_class: python_class is for framework python"
    ):
        prepare_registration("risk", bad, artifact)
    narrow = _write(
        tmp_path,
        "name: risk\nfeatureset: loans\ntask: binary\nframework: sklearn\n"
        "features: [salary, age]\n",
    )
    with pytest.raises(InvalidArgumentError, match="fitted on 9 columns but the spec lists 2"):
        prepare_registration("risk", narrow, artifact)
    with pytest.raises(InvalidArgumentError, match="does not load as a scikit-learn estimator"):
        artifact.write_bytes(b"not a pickle")
        prepare_registration("risk", good, artifact)


def test_the_docstring_examples_run() -> None:
    import doctest

    from driftline.registry_client import external

    result = doctest.testmod(external, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_a_spec_read_back_from_the_registry_keeps_whole_numbers_as_ints() -> None:
    from driftline.registry_api.convert import struct_from_dict, struct_to_dict
    from driftline.specs import ModelSpec

    spec = {
        "name": "loans-hgb", "featureset": "loans", "task": "binary", "framework": "sklearn",
        "features": ["salary", "age"], "classes": [0, 1],
        "pipeline": [{"sklearn.ensemble.HistGradientBoostingClassifier":
                      {"max_iter": 100, "learning_rate": 0.1, "random_state": 0}}],
        "retraining": {"window": 20000, "holdout": 0.2},
    }  # fmt: skip
    back = struct_to_dict(struct_from_dict(spec))
    assert back == spec
    params = back["pipeline"][0]["sklearn.ensemble.HistGradientBoostingClassifier"]
    assert type(params["max_iter"]) is int and type(params["learning_rate"]) is float
    # The pipeline builds from the registry's copy (scikit-learn refuses max_iter=100.0).
    estimator = ModelSpec.model_validate(back).build_pipeline()
    assert estimator.get_params()["max_iter"] == 100
    estimator.fit([[1.0, 2.0], [2.0, 1.0]] * 10, [0, 1] * 10)
