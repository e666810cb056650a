"""Feature-set declarations and the validation of records against them.

A feature set names an entity, its typed raw fields with constraints, and
streaming aggregations per entity over event-time windows::

    name: loans
    version: 1
    entity: customer
    ttl: 1h
    fields:
      salary: {type: float, min: 20000, max: 150000}
      car: {type: int, allowed: [1, 2, 3]}
    aggregations:
      - {field: salary, fn: mean, window: 1h, hop: 5m}
      - {fn: count, window: 5m}

A bad file fails at load with ``file:line: where: what is wrong``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from driftline.contracts.messages import DlqReason, FeatureValue
from driftline.settings import ConfigError, locate, read_yaml_with_lines
from driftline.specs.durations import parse_duration
from driftline.specs.label import LabelSpec, RecordRejected, check_bounds

FieldType = Literal["float", "int", "string", "bool"]
AggFn = Literal["count", "sum", "mean", "min", "max", "last", "stddev"]
_NUMERIC_FNS = {"sum", "mean", "min", "max", "stddev"}


class SpecError(ConfigError):
    """A declaration that cannot be used; the message names file and line."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Spec):
    """One raw field: its type and constraints."""

    type: FieldType
    required: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | float | bool] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.min is not None or self.max is not None) and self.type not in ("float", "int"):
            raise ValueError(f"min/max apply to numeric fields, not to {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.allowed is not None and not self.allowed:
            raise ValueError("allowed must list at least one value")
        return self


class AggregationSpec(_Spec):
    """A per-entity aggregate over an event-time window (tumbling, or hopping with ``hop``)."""

    name: str = ""
    field: str | None = None
    fn: AggFn
    window: float
    """Window length in seconds (written ``5m``, ``1h`` …)."""
    hop: float | None = None
    """Hop in seconds for a hopping window; none means tumbling (hop = window)."""

    @field_validator("window", "hop", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.fn != "count" and self.field is None:
            raise ValueError(f"{self.fn} needs a field")
        hop = self.hop if self.hop is not None else self.window
        if hop > self.window:
            raise ValueError("hop must not be longer than the window")
        ratio = self.window / hop
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError("the window must be a whole number of hops")
        if round(ratio) > 1440:
            raise ValueError("at most 1440 hops per window")
        if not self.name:
            object.__setattr__(self, "name", self.default_name())
        return self

    @property
    def hop_s(self) -> float:
        """The bucket length: ``hop``, or ``window`` for a tumbling window."""
        return self.hop if self.hop is not None else self.window

    def default_name(self) -> str:
        """``<field>_<fn>_<window>`` e.g. ``loan_mean_1h``, or ``count_5m``."""
        w = _fmt_duration(self.window)
        return f"{self.fn}_{w}" if self.field is None else f"{self.field}_{self.fn}_{w}"


def _fmt_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class FeatureSetSpec(_Spec):
    """A feature set: entity, raw fields, aggregations, online TTL."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: int = Field(ge=1)
    entity: str
    description: str = ""
    ttl: float = 86400.0
    """How long an online value stays fresh, in seconds (written ``1h`` …)."""
    fields: dict[str, FieldSpec] = Field(min_length=1)
    aggregations: list[AggregationSpec] = Field(default_factory=list)
    label: LabelSpec | None = None
    """The type of the labels (ground truth) of this feature set's events; labels that are
    not of it are dead-lettered. Without it any finite scalar label is accepted."""

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _references(self) -> Self:
        names = set(self.fields)
        for i, agg in enumerate(self.aggregations):
            if agg.field is not None:
                if agg.field not in self.fields:
                    raise ValueError(
                        f"aggregations.{i}: field {agg.field!r} is not declared "
                        f"(declared: {', '.join(sorted(self.fields))})"
                    )
                ftype = self.fields[agg.field].type
                if agg.fn in _NUMERIC_FNS and ftype not in ("float", "int"):
                    raise ValueError(
                        f"aggregations.{i}: {agg.fn} needs a numeric field; {agg.field} is {ftype}"
                    )
            if agg.name in names:
                raise ValueError(f"aggregations.{i}: the name {agg.name!r} is used twice")
            names.add(agg.name)
        return self

    @property
    def feature_names(self) -> list[str]:
        """Raw fields then aggregates, in declaration order."""
        return [*self.fields, *(a.name for a in self.aggregations)]

    def check_label(self, value: Any) -> Any:
        """``value`` checked against :attr:`label` (any finite scalar when none is declared).

        Raises :class:`RecordRejected` (``schema`` or ``constraint``) naming what is wrong.
        """
        if self.label is not None:
            return self.label.check(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise RecordRejected(DlqReason.CONSTRAINT, f"label: {value!r} is not a finite number")
        return value

    def validate_features(self, features: Mapping[str, Any]) -> dict[str, FeatureValue]:
        """Check raw features against the declaration; return them typed.

        Raises :class:`RecordRejected` with reason ``schema`` (unknown or missing
        field, wrong type) or ``constraint`` (range, allowed values, not finite).
        Integers are accepted for float fields and converted.
        """
        unknown = [k for k in features if k not in self.fields]
        if unknown:
            raise RecordRejected(
                DlqReason.SCHEMA,
                f"{self.name} v{self.version} declares no field {', '.join(map(repr, unknown))}; "
                f"declared: {', '.join(self.fields)}",
            )
        out: dict[str, FeatureValue] = {}
        for name, spec in self.fields.items():
            value = features.get(name)
            if value is None:
                if spec.required:
                    raise RecordRejected(
                        DlqReason.SCHEMA, f"{name} is required by {self.name} v{self.version}"
                    )
                out[name] = None
                continue
            out[name] = _check_value(name, spec, value)
        return out


_INT64 = 2**63


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} digits)"


def _check_value(name: str, spec: FieldSpec, value: Any) -> FeatureValue:
    kind = type(value).__name__
    checked: FeatureValue
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise RecordRejected(DlqReason.SCHEMA, f"{name}: expected bool, got {kind} {value!r}")
        checked = value
    elif spec.type == "string":
        if not isinstance(value, str):
            raise RecordRejected(DlqReason.SCHEMA, f"{name}: expected string, got {kind} {value!r}")
        checked = value
    elif spec.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecordRejected(DlqReason.SCHEMA, f"{name}: expected int, got {kind} {value!r}")
        if not -_INT64 <= value < _INT64:
            # Beyond 64 bits no store, wire format or aggregate takes it.
            raise RecordRejected(
                DlqReason.CONSTRAINT, f"{name}: {_short(value)} is out of the int64 range"
            )
        checked = value
    else:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordRejected(DlqReason.SCHEMA, f"{name}: expected float, got {kind} {value!r}")
        try:
            checked = float(value)
        except OverflowError:  # an int beyond the float range
            checked = math.inf
        if not math.isfinite(checked):
            raise RecordRejected(
                DlqReason.CONSTRAINT, f"{name}: {_short(value)} is not a finite number"
            )
    if isinstance(checked, int | float) and not isinstance(checked, bool):
        check_bounds(name, checked, spec.min, spec.max)
    if spec.allowed is not None and checked not in spec.allowed:
        raise RecordRejected(
            DlqReason.CONSTRAINT,
            f"{name}: {checked!r} is not one of the allowed values {spec.allowed}",
        )
    return checked


def read_spec_mapping(path: Path, shape: str) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """The YAML mapping a spec file holds and the line of each key path; :class:`SpecError`
    for a YAML syntax error (with its line) or a document that is not a mapping (``shape``
    says what it should be)."""
    try:
        data, lines = read_yaml_with_lines(path)
    except ValueError as exc:  # ConfigError: YAML syntax, with its line
        raise SpecError(str(exc)) from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}:1: {shape}")
    return data, lines


def load_featureset(path: Path) -> FeatureSetSpec:
    """Load and validate one feature-set YAML file; :class:`SpecError` names the line."""
    data, lines = read_spec_mapping(path, "a feature set is a mapping (name, version, fields …)")
    try:
        return FeatureSetSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            # Model-level messages name their own sub-path ("aggregations.1: …").
            sub = msg.split(":", 1)[0] if msg.startswith("aggregations.") else ""
            full = (*loc, *sub.split(".")) if sub else loc
            line = locate(full, lines) or 1
            where = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(f"{path}:{line}: {where}: {msg}")
        raise SpecError("invalid feature set:\n  " + "\n  ".join(problems)) from exc


class FeatureSetCatalog:
    """The feature sets a process knows, by name.

    >>> spec = FeatureSetSpec(name="a", version=1, entity="e", fields={"x": {"type": "int"}})
    >>> FeatureSetCatalog([spec]).resolve(None).name
    'a'
    """

    def __init__(self, specs: Iterable[FeatureSetSpec]) -> None:
        self._specs: dict[str, FeatureSetSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise SpecError(f"feature set {spec.name!r} is declared twice")
            self._specs[spec.name] = spec

    def __iter__(self) -> Any:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def get(self, name: str) -> FeatureSetSpec | None:
        """The feature set called ``name``, or None."""
        return self._specs.get(name)

    def resolve(self, name: str | None) -> FeatureSetSpec:
        """The named feature set, or the only one when ``name`` is omitted.

        Raises :class:`RecordRejected` (``unknown_featureset``) otherwise.
        """
        if name is None:
            if len(self._specs) == 1:
                return next(iter(self._specs.values()))
            raise RecordRejected(
                DlqReason.UNKNOWN_FEATURESET,
                "featureset is omitted but "
                + (
                    f"{len(self._specs)} are registered ({', '.join(self._specs)}); name one"
                    if self._specs
                    else "none is registered"
                ),
            )
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(self._specs) or "none"
            raise RecordRejected(
                DlqReason.UNKNOWN_FEATURESET,
                f"feature set {name!r} is not registered; known: {known}",
            )
        return spec


def load_featuresets(directory: Path) -> FeatureSetCatalog:
    """Every ``*.yaml`` / ``*.yml`` feature set in ``directory``."""
    if not directory.is_dir():
        raise SpecError(f"{directory}: feature-set directory not found")
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    return FeatureSetCatalog(load_featureset(f) for f in files)
