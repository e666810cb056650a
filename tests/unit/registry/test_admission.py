"""The registry's checks at registration: every refusal names what is wrong; nothing runs.

Real fitted models of each framework (scikit-learn, LightGBM, XGBoost, ONNX from
skl2onnx, a custom class) are admitted; each kind of mismatch is refused with
INVALID_ARGUMENT naming the framework, format, feature or input, and a refused
registration stores and writes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from onnx import TensorProto

from driftline.artifacts import ArtifactStore
from driftline.contracts.errors import FailedPreconditionError, InvalidArgumentError
from driftline.registry.admission import Admitted, FeatureSets, admit
from driftline.registry.core import Registration
from driftline.registry_api.models import SKLEARN_INPUT_TAG

from .fitted_models import (
    FEATURES,
    PYTHON_CLASS,
    joblibbed,
    lightgbm_model,
    onnx_matrix,
    onnx_per_feature,
    pickled,
    python_artifact,
    sklearn_frame,
    sklearn_logistic,
    spec,
    write_featuresets,
    xgboost_model,
)
from .test_state import LoopbackLog, make_core

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def featuresets(tmp_path_factory: pytest.TempPathFactory) -> FeatureSets:
    return FeatureSets(write_featuresets(tmp_path_factory.mktemp("featuresets")))


@functools.cache
def logistic_bytes() -> bytes:
    return pickled(sklearn_logistic())


@functools.cache
def onnx_bytes() -> bytes:
    return onnx_matrix()


def check(
    featuresets: FeatureSets,
    data: bytes,
    user_spec: Mapping[str, Any],
    *,
    framework: str = "",
    fmt: str = "",
    tags: Mapping[str, str] | None = None,
    libraries: Mapping[str, str] | None = None,
    name: str = "m",
) -> Admitted:
    return admit(
        name,
        framework=framework,
        artifact_format=fmt,
        spec=user_spec,
        data=data,
        tags=tags or {},
        library_versions=libraries or {},
        featuresets=featuresets,
    )


def refused(featuresets: FeatureSets, data: bytes, user_spec: Mapping[str, Any], **kw: Any) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        check(featuresets, data, user_spec, **kw)
    return info.value.message


# -- admitted ---------------------------------------------------------------------------


def test_every_framework_is_admitted_with_its_spec_settled(
    featuresets: FeatureSets, tmp_path: Path
) -> None:
    cases: list[tuple[str, str, bytes, dict[str, Any], dict[str, str]]] = [
        ("sklearn", "sklearn-pickle", logistic_bytes(), {"features": FEATURES}, {}),
        (
            "sklearn",
            "sklearn-joblib",
            joblibbed(sklearn_logistic(), tmp_path / "m.joblib"),
            {"features": FEATURES},
            {},
        ),
        (
            "sklearn",
            "sklearn-pickle",
            pickled(sklearn_frame()),
            {},
            {SKLEARN_INPUT_TAG: "dataframe"},
        ),
        ("sklearn", "sklearn-pickle", pickled(lightgbm_model()), {"features": FEATURES}, {}),
        ("sklearn", "sklearn-pickle", pickled(xgboost_model()), {"features": FEATURES}, {}),
        ("onnx", "onnx", onnx_bytes(), {"features": FEATURES, "classes": [0, 1]}, {}),
        ("python", "python-bytes", python_artifact(), {"python_class": PYTHON_CLASS}, {}),
    ]
    for framework, fmt, data, extra, tags in cases:
        got = check(
            featuresets,
            data,
            spec("m", framework, **extra),
            framework=framework,
            fmt=fmt,
            tags=tags,
            libraries={"scikit-learn": "1.9.1"},
        )
        assert (got.framework, got.artifact_format) == (framework, fmt)
        assert got.spec["framework"] == framework
        assert got.library_versions == {"scikit-learn": "1.9.1"}
        if "features" in extra:
            assert got.spec["features"] == FEATURES


def test_a_spec_without_features_takes_the_feature_sets_and_the_format_its_runtimes_first(
    featuresets: FeatureSets,
) -> None:
    got = check(featuresets, python_artifact(), spec("m", "python", python_class=PYTHON_CLASS))
    loans = featuresets.catalog()
    assert loans is not None
    assert got.spec["features"] == loans.resolve("loans").feature_names
    assert len(got.spec["features"]) == 16  # 9 fields and 7 aggregates
    assert (got.framework, got.artifact_format) == ("python", "python-bytes")


def test_onnx_with_one_input_per_feature_is_admitted(featuresets: FeatureSets) -> None:
    data = onnx_per_feature(
        {"salary": TensorProto.DOUBLE, "age": TensorProto.INT64, "count_1h": TensorProto.FLOAT}
    )
    got = check(featuresets, data, spec("m", "onnx", features=["salary", "age", "count_1h"]))
    assert got.spec["features"] == ["salary", "age", "count_1h"]


def test_river_registrations_are_admitted_as_before(featuresets: FeatureSets) -> None:
    # What training and the existing clients send: no framework, river-pickle or no
    # format, a spec without one or naming a feature set the registry does not know.
    assert check(featuresets, b"opaque", {}).framework == "river"
    assert check(featuresets, b"x", {}, fmt="river-pickle").artifact_format == "river-pickle"
    other = {"name": "m", "featureset": "fruit", "task": "multiclass", "features": ["weight"]}
    assert check(featuresets, b"x", other).spec == other
    loans = {
        "name": "m",
        "featureset": "loans",
        "task": "binary",
        "features": FEATURES,
        "framework": "river",
        "pipeline": ["tree.HoeffdingTreeClassifier"],
    }
    assert check(featuresets, b"x", loans, framework="river").spec == loans


# -- refused: framework and format --------------------------------------------------------


def test_an_unknown_framework_is_refused_naming_it(featuresets: FeatureSets) -> None:
    message = refused(featuresets, b"x", spec("m", "tensorflow"), framework="tensorflow")
    assert "framework 'tensorflow' is not one this registry knows" in message
    assert "onnx, python, river, sklearn" in message


def test_a_format_the_runtime_does_not_read_is_refused_naming_it(featuresets: FeatureSets) -> None:
    message = refused(featuresets, logistic_bytes(), spec("m", "sklearn"), fmt="onnx")
    assert "artifact format 'onnx' is not one the sklearn runtime reads" in message
    assert "sklearn-pickle, sklearn-joblib" in message
    assert "river-pickle" in refused(featuresets, b"x", {}, fmt="sklearn-pickle")


def test_a_framework_that_disagrees_with_the_spec_is_refused(featuresets: FeatureSets) -> None:
    message = refused(featuresets, onnx_bytes(), spec("m", "sklearn"), framework="onnx")
    assert "framework is 'onnx' but its spec says 'sklearn'" in message


# -- refused: the spec against the feature set ------------------------------------------


def test_a_feature_the_feature_set_lacks_is_refused_naming_it(featuresets: FeatureSets) -> None:
    user = spec("m", "sklearn", features=[*FEATURES[:8], "income"])
    message = refused(featuresets, logistic_bytes(), user)
    assert "m needs feature 'income', which feature set loans v1 lacks" in message
    # River too, when the registry knows the feature set.
    river = {"name": "m", "featureset": "loans", "task": "binary", "features": ["salary", "debt"]}
    assert "needs feature 'debt'" in refused(featuresets, b"x", river)


def test_specs_that_cannot_describe_the_inputs_are_refused(featuresets: FeatureSets) -> None:
    data = python_artifact()
    assert "needs its model spec" in refused(featuresets, data, {}, framework="python")
    py = {"python_class": PYTHON_CLASS}
    assert "spec is for model 'other', not 'm'" in refused(
        featuresets, data, spec("other", "python", **py)
    )
    assert "spec task 'ranking'" in refused(
        featuresets, data, spec("m", "python", task="ranking", **py)
    )
    assert "names no featureset" in refused(
        featuresets, data, spec("m", "python", featureset="", **py)
    )
    unknown = refused(featuresets, data, spec("m", "python", featureset="fraud", **py))
    assert "feature set 'fraud' is not one the registry knows (known: loans, shops)" in unknown
    twice = spec("m", "python", features=["salary", "salary"], **py)
    assert "'salary' twice" in refused(featuresets, data, twice)
    task = refused(featuresets, data, spec("m", "python", task="regression", **py))
    assert "regression model, but feature set loans declares binary labels" in task


def test_classes_that_do_not_fit_the_task_are_refused(featuresets: FeatureSets) -> None:
    three = spec("m", "onnx", features=FEATURES, classes=["a", "b", "c"])
    assert "a binary model has 2 classes" in refused(featuresets, onnx_bytes(), three)
    twice = spec("m", "onnx", features=FEATURES, classes=[1, "1"])
    assert "name a class twice" in refused(featuresets, onnx_bytes(), twice)


def test_without_its_feature_sets_the_registry_cannot_check_and_says_so(tmp_path: Path) -> None:
    missing = FeatureSets(tmp_path / "nowhere")
    with pytest.raises(FailedPreconditionError, match="nowhere does not exist"):
        check(missing, python_artifact(), spec("m", "python", python_class=PYTHON_CLASS))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.yaml").write_text("name: bad\nversion: 1\nentity: e\nfields: {}\n")
    with pytest.raises(FailedPreconditionError, match=r"bad\.yaml:4"):
        check(
            FeatureSets(broken), python_artifact(), spec("m", "python", python_class=PYTHON_CLASS)
        )


# -- refused: types the model cannot take -------------------------------------------------


def test_a_string_feature_is_refused_for_an_array_fitted_sklearn_model(
    featuresets: FeatureSets,
) -> None:
    user = {
        "name": "m",
        "featureset": "shops",
        "task": "binary",
        "framework": "sklearn",
        "features": ["amount", "city", "items"],
    }
    message = refused(featuresets, logistic_bytes(), user)
    assert "feature 'city' is a string in feature set shops" in message
    assert "fitted on an array takes numbers only" in message
    # Fitted on a DataFrame (what the CLI and register_model saw and recorded): admitted.
    tags = {SKLEARN_INPUT_TAG: "dataframe"}
    assert check(featuresets, logistic_bytes(), user, tags=tags).spec["features"][1] == "city"
    # A `last` aggregate of a string field is a string too.
    last = {**user, "features": ["amount", "city_last_1h"]}
    assert "feature 'city_last_1h' is a string" in refused(featuresets, logistic_bytes(), last)


def test_onnx_inputs_that_do_not_match_the_features_are_refused(featuresets: FeatureSets) -> None:
    narrow = refused(featuresets, onnx_matrix(columns=4), spec("m", "onnx", features=FEATURES))
    assert "input 'X' takes 4 columns but the model reads 9 features" in narrow
    # No features listed: the feature set's 16 do not fit a 9-column matrix either.
    assert "takes 9 columns but the model reads 16 features" in refused(
        featuresets, onnx_bytes(), spec("m", "onnx")
    )
    foreign = onnx_per_feature({"salary": TensorProto.DOUBLE, "income": TensorProto.DOUBLE})
    message = refused(featuresets, foreign, spec("m", "onnx", features=["salary", "age"]))
    assert "input 'income' is not a feature of the model (salary, age)" in message
    lossy = onnx_per_feature({"salary": TensorProto.INT64, "age": TensorProto.INT64})
    message = refused(featuresets, lossy, spec("m", "onnx", features=["salary", "age"]))
    assert (
        "feature 'salary' is a float in feature set loans, but the ONNX model's input "
        "'salary' is int64" in message
    )
    cube = onnx_per_feature({"salary": TensorProto.DOUBLE}, dims=["N", 2, 2])
    assert "is shaped ['N', 2, 2]" in refused(
        featuresets, cube, spec("m", "onnx", features=["salary"])
    )


def test_a_string_feature_into_a_numeric_onnx_input_is_refused(featuresets: FeatureSets) -> None:
    shops = {"name": "m", "featureset": "shops", "task": "binary", "framework": "onnx"}
    matrix = onnx_matrix(columns=3)
    message = refused(featuresets, matrix, {**shops, "features": ["amount", "city", "items"]})
    assert (
        "feature 'city' is a string in feature set shops, but the ONNX model's input 'X' "
        "is a matrix of float" in message
    )
    numeric = onnx_per_feature({"amount": TensorProto.DOUBLE, "city": TensorProto.FLOAT})
    message = refused(featuresets, numeric, {**shops, "features": ["amount", "city"]})
    assert (
        "feature 'city' is a string in feature set shops, but the ONNX model's input "
        "'city' is float" in message
    )
    # A string input per feature takes it.
    strings = onnx_per_feature({"amount": TensorProto.DOUBLE, "city": TensorProto.STRING})
    assert (
        check(featuresets, strings, {**shops, "features": ["amount", "city"]}).framework == "onnx"
    )


# -- refused: corrupt artifacts and class paths -------------------------------------------


def test_corrupt_artifacts_are_refused_without_running_them(featuresets: FeatureSets) -> None:
    garbage = b"\x13\x37 this is not a model \xff" * 10
    assert "not an ONNX model" in refused(
        featuresets, garbage, spec("m", "onnx", features=FEATURES)
    )
    cut = onnx_bytes()[: len(onnx_bytes()) // 2]
    assert "ONNX model" in refused(featuresets, cut, spec("m", "onnx", features=FEATURES))
    truncated = logistic_bytes()[:-40]
    message = refused(featuresets, truncated, spec("m", "sklearn", features=FEATURES))
    assert "the artifact is not a whole pickle" in message
    onnx_as_joblib = refused(
        featuresets, onnx_bytes(), spec("m", "sklearn", features=FEATURES), fmt="sklearn-joblib"
    )
    assert "not a joblib file" in onnx_as_joblib


def test_a_pickle_that_would_run_code_is_read_not_run(
    featuresets: FeatureSets, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"

    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    data = pickled(Boom())
    # A whole pickle passes the check (the registry cannot judge its contents) …
    check(featuresets, data, spec("m", "sklearn", features=FEATURES))
    # … and nothing in it was executed.
    assert not marker.exists()


def test_a_python_class_that_is_not_an_import_path_is_refused(featuresets: FeatureSets) -> None:
    for bad in ("ThresholdModel", "support.custom_model:ThresholdModel", "os.system('x')"):
        message = refused(featuresets, python_artifact(), spec("m", "python", python_class=bad))
        assert f"python_class {bad!r} is not an import path" in message


def test_oversized_library_versions_are_refused(featuresets: FeatureSets) -> None:
    many = {f"lib{i}": "1.0" for i in range(65)}
    assert "at most 64" in refused(featuresets, b"x", {}, libraries=many)


# -- the core: nothing registered half-way ---------------------------------------------------


async def test_a_refused_registration_stores_and_writes_nothing(
    tmp_path: Path, featuresets: FeatureSets
) -> None:
    log = LoopbackLog()
    core = make_core(tmp_path / "store", log)
    core.featuresets = featuresets
    ok, _ = await core.register(
        Registration(
            name="m",
            spec=spec("m", "sklearn", features=FEATURES),
            framework="sklearn",
            artifact_format="sklearn-pickle",
            library_versions={"scikit-learn": "1.9.1"},
        ),
        logistic_bytes(),
    )
    assert (ok.framework, ok.artifact_format, ok.library_versions) == (
        "sklearn",
        "sklearn-pickle",
        {"scikit-learn": "1.9.1"},
    )
    assert ok.spec["features"] == FEATURES and "_registry" not in ok.spec
    bad = spec("m", "onnx", features=FEATURES)
    with pytest.raises(InvalidArgumentError, match="takes 4 columns"):
        await core.register(Registration(name="m", spec=bad), onnx_matrix(columns=4))
    assert len(log.events) == 1
    assert core.state.models["m"].latest == 1
    store = ArtifactStore(str(tmp_path / "store"))
    assert store.exists(ok.sha256)
    assert sum(1 for p in (tmp_path / "store").rglob("*") if p.is_file()) == 1
    # The River registration of before: no spec, opaque bytes, still a version.
    river, _ = await core.register(Registration(name="m"), b"river-bytes")
    assert (river.version, river.framework) == (2, "river")
