"""Python scalars ↔ ``driftline.v1.Value`` (features, predictions, parameters).

A ``Value`` holds one of double, int64, string or bool, or nothing (a missing
value). ``bool`` is tested before ``int`` (it is one in Python); anything that is
not a scalar of those kinds travels as its ``str``.

>>> value_to_pb(3).WhichOneof("kind"), value_to_pb(True).WhichOneof("kind")
('int64_value', 'bool_value')
>>> value_from_pb(value_to_pb(2.5)), value_from_pb(value_to_pb(None))
(2.5, None)
>>> values_from_pb(values_to_pb({"age": 41, "car": "sedan"}))
{'age': 41, 'car': 'sedan'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from driftline.v1 import common_pb2

__all__ = ["Scalar", "set_value", "value_from_pb", "value_to_pb", "values_from_pb", "values_to_pb"]

Scalar: TypeAlias = float | int | str | bool | None
"""What a ``Value`` carries, as Python sees it (``None``: unset)."""


def set_value(target: common_pb2.Value, value: Any) -> None:
    """Set ``target`` (a fresh, unset ``Value``, e.g. a map's own entry) to ``value``.

    Filling the message in place is half the cost of building a ``Value`` and
    copying it in, which matters on serving's per-request path; the exact types
    are tried first for the same reason (subclasses such as ``numpy.float64`` take
    the ``isinstance`` path). ``None`` leaves ``target`` unset.
    """
    kind = type(value)
    if kind is float:
        target.double_value = value
    elif kind is int:
        target.int64_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is str:
        target.string_value = value
    elif value is None:
        return
    elif isinstance(value, bool):
        target.bool_value = bool(value)
    elif isinstance(value, int):
        target.int64_value = int(value)
    elif isinstance(value, float):
        target.double_value = float(value)
    else:
        target.string_value = str(value)


def value_to_pb(value: Any) -> common_pb2.Value:
    """A new ``Value`` of a Python scalar (unset for ``None``)."""
    out = common_pb2.Value()
    set_value(out, value)
    return out


def value_from_pb(value: common_pb2.Value) -> Scalar:
    """The Python scalar of a ``Value`` (``None`` when unset)."""
    kind = value.WhichOneof("kind")
    return None if kind is None else getattr(value, kind)


def values_to_pb(values: Mapping[str, Any]) -> dict[str, common_pb2.Value]:
    """``map<string, Value>`` entries of named scalars (features, parameters)."""
    return {name: value_to_pb(value) for name, value in values.items()}


def values_from_pb(values: Mapping[str, common_pb2.Value]) -> dict[str, Scalar]:
    """The named scalars of a ``map<string, Value>``."""
    return {name: value_from_pb(value) for name, value in values.items()}
