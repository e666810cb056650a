"""The label type a feature set declares, and the check every label passes.

A label that a model cannot learn from must be stopped where it enters: one
``"maybe"`` among a binary model's 0/1 labels is learned without complaint and
breaks the tree at its next split attempt (``'<' not supported between
instances of 'int' and 'str'``).  Ingestion checks every label against its
feature set's declaration and dead-letters the rest; training checks again
against its model's task before learning, so a label that slipped in (written
before the declaration, or by another producer) is skipped, not learned::

    label: {type: binary}                        # 0/1 or true/false
    label: {type: binary, classes: [no, yes]}    # two named classes
    label: {type: multiclass, classes: [a, b, c]}
    label: {type: multiclass, dtype: int}        # any integer class
    label: {type: regression, min: 0}            # a finite number (in range)

>>> spec = LabelSpec(type="binary")
>>> spec.check(1), spec.check(True), spec.check(0.0)
(1, True, 0)
>>> spec.check("maybe")
Traceback (most recent call last):
...
driftline.specs.label.RecordRejected: label: 'maybe' is not a binary class (0/1 or true/false)
"""

from __future__ import annotations

import math
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, model_validator

from driftline.contracts.messages import DlqReason, LabelValue

__all__ = ["LabelSpec", "LabelTask", "RecordRejected", "check_bounds", "default_label_spec"]

LabelTask = Literal["binary", "multiclass", "regression"]


class RecordRejected(ValueError):
    """A record that does not satisfy its feature set, with the DLQ reason."""

    def __init__(self, reason: DlqReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def check_bounds(name: str, number: float, low: float | None, high: float | None) -> None:
    """Reject ``number`` (the value of ``name``) outside the declared ``[low, high]``."""
    if low is not None and number < low:
        raise RecordRejected(
            DlqReason.CONSTRAINT, f"{name}: {number!r} is below the minimum {low:g}"
        )
    if high is not None and number > high:
        raise RecordRejected(
            DlqReason.CONSTRAINT, f"{name}: {number!r} is above the maximum {high:g}"
        )


_INT64 = 2**63


def _kind(value: Any) -> str:
    return type(value).__name__


class LabelSpec(BaseModel):
    """What a feature set's labels are: the task's target type and its classes or range."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: LabelTask
    classes: list[str | int | bool] | None = None
    """binary: the two classes (default 0/1, true/false); multiclass: every class there is."""
    dtype: Literal["int", "string"] | None = None
    """multiclass without ``classes``: the type every class has."""
    min: float | None = None
    """regression: the smallest target accepted."""
    max: float | None = None
    """regression: the largest target accepted."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type == "regression":
            if self.classes is not None or self.dtype is not None:
                raise ValueError("a regression label has no classes or dtype; use min/max")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
            return self
        if self.min is not None or self.max is not None:
            raise ValueError(f"min/max apply to regression labels, not to {self.type}")
        if self.classes is not None:
            if len(set(map(repr, self.classes))) != len(self.classes):
                raise ValueError("a class is listed twice")
            if self.type == "binary" and len(self.classes) != 2:
                raise ValueError(f"a binary label has 2 classes, not {len(self.classes)}")
            if self.type == "multiclass" and len(self.classes) < 2:
                raise ValueError("list at least 2 classes")
            if self.dtype is not None:
                raise ValueError("give classes or dtype, not both")
        elif self.type == "multiclass" and self.dtype is None:
            raise ValueError("a multiclass label names its classes (or their dtype: int|string)")
        return self

    def check(self, value: Any) -> LabelValue:
        """``value`` as this label type takes it; :class:`RecordRejected` when it cannot be one.

        Binary 0/1 given as ``0.0``/``1.0`` comes back as an int; everything else as given.
        """
        if self.type == "regression":
            return self._number(value)
        if self.classes is not None:
            for cls in self.classes:
                if value == cls and type(value) is type(cls):
                    return value
            raise RecordRejected(
                DlqReason.CONSTRAINT,
                f"label: {value!r} is not one of the declared classes {self.classes}",
            )
        if self.type == "binary":
            if isinstance(value, bool):
                return value
            if isinstance(value, int | float) and value in (0, 1):
                return int(value)
            raise RecordRejected(
                DlqReason.CONSTRAINT,
                f"label: {value!r} is not a binary class (0/1 or true/false)",
            )
        wanted = int if self.dtype == "int" else str
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise RecordRejected(
                DlqReason.SCHEMA,
                f"label: expected a{'n int' if wanted is int else ' string'} class, "
                f"got {_kind(value)} {value!r}",
            )
        if isinstance(value, int) and not -_INT64 <= value < _INT64:
            raise RecordRejected(DlqReason.CONSTRAINT, f"label: {value} is out of the int64 range")
        return value

    def _number(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordRejected(
                DlqReason.SCHEMA, f"label: expected a number, got {_kind(value)} {value!r}"
            )
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise RecordRejected(DlqReason.CONSTRAINT, f"label: {value!r} is not a finite number")
        check_bounds("label", number, self.min, self.max)
        return number

    def describe(self) -> str:
        """A short human form: ``binary (0/1, true/false)``, ``multiclass of [a, b]`` …"""
        if self.type == "regression":
            bounds = f" in [{self.min:g}, {self.max:g}]" if None not in (self.min, self.max) else ""
            return f"regression (a finite number{bounds})"
        if self.classes is not None:
            return f"{self.type} of {self.classes}"
        if self.type == "binary":
            return "binary (0/1, true/false)"
        return f"multiclass ({self.dtype} classes)"


def default_label_spec(task: LabelTask, first: LabelValue | None = None) -> LabelSpec:
    """The check a model of ``task`` applies when its feature set declares no label type.

    binary: 0/1 or true/false; regression: a finite number; multiclass: classes of one
    type, the type of the ``first`` label learned (strings unless it was an int).
    """
    if task == "multiclass":
        is_int = isinstance(first, int) and not isinstance(first, bool)
        return LabelSpec(type="multiclass", dtype="int" if is_int else "string")
    return LabelSpec(type=task)
