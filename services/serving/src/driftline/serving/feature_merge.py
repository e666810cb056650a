"""Request-time features checked against a model's input, and merged with online ones.

The policy for online features that are MISSING or STALE is declared per model:

* ``impute`` — leave them out of the model's input; River models treat an absent
  key as a missing value (a tree sends it down its most common branch, a linear
  model treats it as 0 after scaling).
* ``fail`` — refuse the prediction with FAILED_PRECONDITION naming the features.

>>> from driftline.serving.loaded_model import LoadedModel
>>> m = LoadedModel.build("m", 1, None, spec={"features": ["a", "b"], "task": "binary"},
...                       feature_types={"a": "FP64", "b": "BYTES"})
>>> merged = merge_features(m, "e1", {"a": OnlineValue(1.5, "PRESENT", 20),
...                                   "b": OnlineValue(None, "STALE", 9000)}, {}, "impute")
>>> merged.x, merged.ages_ms, merged.status
({'a': 1.5}, {'a': 20, 'b': 9000}, {'a': 'PRESENT', 'b': 'STALE'})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from driftline.contracts.errors import FailedPreconditionError, InvalidArgumentError
from driftline.serving.feature_source import MISSING, FeatureStatusName, OnlineValue
from driftline.serving.loaded_model import FeatureDatatype, LoadedModel

__all__ = [
    "FeaturePolicy",
    "MergedFeatures",
    "check_value",
    "merge_features",
    "validate_request_features",
]

FeaturePolicy = Literal["impute", "fail"]


@dataclass(slots=True)
class MergedFeatures:
    """What the model sees (``x``) and how fresh each online value read was."""

    x: dict[str, Any]
    ages_ms: dict[str, int]
    status: dict[str, FeatureStatusName]


def check_value(name: str, datatype: FeatureDatatype, value: Any) -> Any:
    """``value`` as feature ``name`` of ``datatype`` takes it; InvalidArgumentError if it cannot.

    Integral floats are accepted for INT64 features (JSON clients send ``41.0``)
    and become ints, so the model sees what training saw.

    >>> check_value("age", "INT64", 41.0)
    41
    >>> check_value("age", "INT64", "41")
    Traceback (most recent call last):
    ...
    driftline.contracts.errors.InvalidArgumentError: feature 'age' is INT64; got a string ('41')
    """
    t = type(value)
    if datatype == "FP64":
        if t is float or t is int:
            return value
    elif datatype == "INT64":
        if t is int:
            return value
        if t is float and value.is_integer():
            return int(value)
    elif datatype == "BYTES":
        if t is str:
            return value
    elif datatype == "BOOL" and t is bool:
        return value
    kind = {bool: "a bool", int: "an integer", float: "a float", str: "a string"}.get(
        t, type(value).__name__
    )
    raise InvalidArgumentError(f"feature {name!r} is {datatype}; got {kind} ({value!r})")


def validate_request_features(model: LoadedModel, features: Mapping[str, Any]) -> dict[str, Any]:
    """Request-time features checked against ``model``'s input; ``None`` values are dropped.

    Raises :class:`InvalidArgumentError` naming unknown features (and the known
    ones) or a value of the wrong type.
    """
    by_name = model.by_name
    unknown = [n for n in features if n not in by_name]
    if unknown:
        raise InvalidArgumentError(
            f"unknown feature(s) {', '.join(map(repr, sorted(unknown)))} for model "
            f"{model.describe()}; its features are: {', '.join(model.feature_names)}"
        )
    out: dict[str, Any] = {}
    for name, value in features.items():
        if value is not None:
            out[name] = check_value(name, by_name[name].datatype, value)
    return out


def merge_features(
    model: LoadedModel,
    entity_id: str,
    online: Mapping[str, OnlineValue],
    request: Mapping[str, Any],
    policy: FeaturePolicy,
) -> MergedFeatures:
    """Request-time features (already validated) override online ones of the same name.

    Online features the request did not supply and that are MISSING or STALE are
    left out (``impute``) or refused with :class:`FailedPreconditionError`
    (``fail``). Ages and statuses cover the online values read.
    """
    x: dict[str, Any] = {}
    ages: dict[str, int] = {}
    status: dict[str, FeatureStatusName] = {}
    lacking: list[str] = []
    for name in model.feature_names:
        if name in request:
            x[name] = request[name]
            continue
        read = online.get(name, MISSING)
        status[name] = read.status
        ages[name] = read.age_ms
        if read.status == "PRESENT" and read.value is not None:
            x[name] = read.value
        else:
            lacking.append(f"{name} ({read.status.lower()})")
    if lacking and policy == "fail":
        raise FailedPreconditionError(
            f"model {model.describe()} needs online features that entity {entity_id!r} "
            f"lacks: {', '.join(lacking)}; send them as request-time features, wait for "
            "fresh events, or serve this model with the 'impute' feature policy"
        )
    return MergedFeatures(x, ages, status)
