"""Shared pieces of the serving unit tests: small trained River models, in-memory sources."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from river import linear_model, tree
from river.datasets import synth

from driftline.serving.loaded_model import FeatureDatatype, LoadedModel

LOAN_TYPES: dict[str, FeatureDatatype] = {
    "salary": "FP64",
    "commission": "FP64",
    "age": "INT64",
    "elevel": "INT64",
    "car": "INT64",
    "zipcode": "INT64",
    "hvalue": "FP64",
    "hyears": "INT64",
    "loan": "FP64",
}
SPEC: dict[str, Any] = {"featureset": "loans", "features": list(LOAN_TYPES), "task": "binary"}


@pytest.fixture(scope="session")
def rows() -> list[dict[str, Any]]:
    """300 Agrawal feature rows (the loans feature set's raw fields)."""
    return [x for x, _ in synth.Agrawal(seed=7).take(300)]


@pytest.fixture(scope="session")
def tree_pipeline() -> Any:
    """A Hoeffding tree trained on 2,000 Agrawal rows (function 0)."""
    model = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in synth.Agrawal(classification_function=0, seed=1).take(2000):
        model.learn_one(x, y)
    return model


@pytest.fixture(scope="session")
def other_pipeline() -> Any:
    """A differently trained classifier (labels of another Agrawal function)."""
    model = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in synth.Agrawal(classification_function=2, seed=3).take(2000):
        model.learn_one(x, 1 - y)
    return model


def _make_model(pipeline: Any, version: int, name: str = "loans-risk") -> LoadedModel:
    return LoadedModel.build(name, version, pipeline, spec=SPEC, feature_types=LOAN_TYPES)


@pytest.fixture(scope="session")
def make_model() -> Callable[..., LoadedModel]:
    """``make_model(pipeline, version, name="loans-risk")``: a model over the loans features."""
    return _make_model


@pytest.fixture(scope="session")
def loan_types() -> dict[str, FeatureDatatype]:
    """The loans feature set's declared datatypes."""
    return dict(LOAN_TYPES)


@pytest.fixture
def untrained_linear() -> Any:
    """A logistic regression that has learnt nothing."""
    return linear_model.LogisticRegression()
