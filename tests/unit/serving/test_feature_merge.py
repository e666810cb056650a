"""Request-time features checked and merged with online ones under the declared policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from driftline.contracts.errors import FailedPreconditionError, InvalidArgumentError
from driftline.serving.feature_merge import merge_features, validate_request_features
from driftline.serving.feature_source import OnlineValue
from driftline.serving.loaded_model import LoadedModel

pytestmark = pytest.mark.unit


@pytest.fixture
def model(tree_pipeline: Any, make_model: Callable[..., LoadedModel]) -> LoadedModel:
    return make_model(tree_pipeline, 1)


def present(**values: Any) -> dict[str, OnlineValue]:
    return {k: OnlineValue(v, "PRESENT", 1000) for k, v in values.items()}


def test_request_features_override_online_ones(model: LoadedModel) -> None:
    online = present(salary=50_000.0, age=30)
    merged = merge_features(model, "c-1", online, {"salary": 99_000.0}, "impute")
    assert merged.x["salary"] == 99_000.0
    assert merged.x["age"] == 30
    # The overridden feature was not an online read, so it has no age or status.
    assert "salary" not in merged.ages_ms and merged.ages_ms["age"] == 1000
    assert merged.status["age"] == "PRESENT"


def test_impute_leaves_missing_and_stale_out_and_reports_them(model: LoadedModel) -> None:
    online = present(salary=50_000.0)
    online["age"] = OnlineValue(None, "STALE", 7_200_000)
    merged = merge_features(model, "c-1", online, {}, "impute")
    assert merged.x == {"salary": 50_000.0}
    assert merged.status["age"] == "STALE" and merged.ages_ms["age"] == 7_200_000
    assert merged.status["loan"] == "MISSING"


def test_fail_policy_names_every_lacking_feature(model: LoadedModel) -> None:
    online = present(**{n: 1.0 for n in model.feature_names if n not in ("age", "loan")})
    online["age"] = OnlineValue(None, "STALE", 10)
    with pytest.raises(FailedPreconditionError) as err:
        merge_features(model, "c-9", online, {}, "fail")
    assert "age (stale)" in err.value.message and "loan (missing)" in err.value.message
    assert "c-9" in err.value.message
    assert err.value.grpc_code == "FAILED_PRECONDITION"


def test_fail_policy_passes_when_the_request_supplies_what_is_missing(model: LoadedModel) -> None:
    online = present(**{n: 1.0 for n in model.feature_names if n != "age"})
    merged = merge_features(model, "c-1", online, {"age": 40}, "fail")
    assert merged.x["age"] == 40


def test_unknown_request_feature_is_invalid_and_named(model: LoadedModel) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        validate_request_features(model, {"salary": 1.0, "income": 2.0})
    assert "'income'" in err.value.message and "salary" in err.value.message


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("age", "forty", "INT64; got a string"),
        ("salary", True, "FP64; got a bool"),
        ("age", 40.5, "INT64; got a float"),
    ],
)
def test_wrongly_typed_request_feature_is_invalid(
    model: LoadedModel, name: str, value: Any, needle: str
) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        validate_request_features(model, {name: value})
    assert needle in err.value.message


def test_whole_floats_become_ints_and_nulls_are_dropped(model: LoadedModel) -> None:
    out = validate_request_features(model, {"age": 41.0, "salary": 3, "loan": None})
    assert out == {"age": 41, "salary": 3}
    assert type(out["age"]) is int
