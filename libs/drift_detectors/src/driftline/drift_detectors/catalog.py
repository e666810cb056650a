"""Which detector a name means: the built-ins, installed plug-ins, and yours.

The monitoring setting ``monitoring.detector`` names a detector by ``type`` and
gives its parameters (``{type: river.ADWIN, delta: 0.002}``); the monitor builds
one per model with :func:`detector_builder`, ``driftline eval-drift`` measures
any of them by the same name.

Names come from three places, earlier ones winning:

1. :func:`register_detector` (the public extension point for code that runs in
   the process: tests, a notebook, a wrapper script);
2. the built-ins: ``error_rise`` (:class:`~.error_rise.ErrorRiseDetector`) and
   River's detectors as ``river.<Class>`` (:data:`RIVER_DETECTORS`);
3. entry points of installed packages in the ``driftline.drift_detectors`` group,
   ``name = "package.module:factory"`` (found in every process, so also by the
   worker processes of ``eval-drift``).

A *factory* is a class or function called with the parameters as keywords that
returns a River drift detector.  Its signature is the parameters' schema: the
type hints (``Annotated`` constraints included) or, when it has none, the type of
each default say what a value must be, checked by pydantic before the detector is
built; an unknown parameter is an error, not ignored.

>>> sorted(detector_params("error_rise", {"warmup": "500"}).items())[:3]
[('confirm_z', 3.0), ('lag', 400), ('min_errors', 5)]
>>> detector_params("error_rise", {"warmup": "500"})["warmup"]
500
>>> try:
...     detector_params("error_rise", {"warmpu": 500})
... except DetectorConfigError as exc:
...     print(exc)  # doctest: +ELLIPSIS
detector 'error_rise' has no parameter 'warmpu'; it takes: warmup, lag, reference_span, ...
>>> try:
...     detector_builder("river.ADWN")
... except DetectorConfigError as exc:
...     print(exc)  # doctest: +ELLIPSIS
no drift detector is named 'river.ADWN'; known: error_rise, river.ADWIN, ...
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from driftline.drift_detectors.base import ErrorDetector, is_drift_detector

__all__ = [
    "DEFAULT_DETECTOR",
    "ENTRY_POINT_GROUP",
    "RIVER_DETECTORS",
    "DetectorConfigError",
    "DetectorFactory",
    "detector_builder",
    "detector_factory",
    "detector_names",
    "detector_params",
    "register_detector",
]

ENTRY_POINT_GROUP = "driftline.drift_detectors"
"""The entry-point group a package names its detectors in."""

DEFAULT_DETECTOR = "error_rise"
"""The detector the monitor runs when the settings name none."""

DetectorFactory = Callable[..., ErrorDetector]
"""A class or function: parameters as keywords in, a River drift detector out."""

RIVER_DETECTORS: dict[str, str] = {
    "river.ADWIN": "river.drift:ADWIN",
    "river.PageHinkley": "river.drift:PageHinkley",
    "river.KSWIN": "river.drift:KSWIN",
    "river.DDM": "river.drift.binary:DDM",
    "river.EDDM": "river.drift.binary:EDDM",
    "river.HDDMA": "river.drift.binary:HDDMA",
    "river.HDDMW": "river.drift.binary:HDDMW",
    "river.FHDDM": "river.drift.binary:FHDDM",
}
"""River's detectors usable on an error stream, by the name the settings use.  Imported only
when named (importing ``river.drift`` takes a second or two)."""

_BUILTIN: dict[str, str] = {
    DEFAULT_DETECTOR: "driftline.drift_detectors.error_rise:ErrorRiseDetector",
    **RIVER_DETECTORS,
}

_registered: dict[str, DetectorFactory] = {}


class DetectorConfigError(ValueError):
    """A detector name or parameter that cannot be used; the message says which and why."""


def register_detector(name: str, factory: DetectorFactory) -> None:
    """Build detector ``name`` with ``factory`` from now on (in this process)."""
    if not name or not isinstance(name, str):
        raise ValueError(f"a detector needs a non-empty name, not {name!r}")
    if not callable(factory):
        raise TypeError(f"the factory of detector {name!r} is not callable: {factory!r}")
    _registered[name] = factory


def _plugins() -> dict[str, EntryPoint]:
    """Entry points of the group, looked up each time (a scan of installed metadata)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def detector_names() -> list[str]:
    """Every name a detector can be built by: the built-ins, registered ones, then plug-ins."""
    names = dict.fromkeys([*_BUILTIN, *_registered])
    names.update(dict.fromkeys(sorted(_plugins())))
    return list(names)


def detector_factory(name: str) -> DetectorFactory:
    """The factory of detector ``name``; :class:`DetectorConfigError` when none or it fails to
    load."""
    if name in _registered:
        return _registered[name]
    value = _BUILTIN.get(name)
    ep = EntryPoint(name, value, ENTRY_POINT_GROUP) if value else _plugins().get(name)
    if ep is None:
        raise DetectorConfigError(
            f"no drift detector is named {name!r}; known: {', '.join(detector_names())}"
        )
    try:
        factory = ep.load()
    except Exception as exc:  # a broken plug-in is a configuration problem, named as such
        raise DetectorConfigError(
            f"drift detector {name!r} ({ep.value}) does not load: {exc}"
        ) from exc
    if not callable(factory):
        raise DetectorConfigError(f"drift detector {name!r} ({ep.value}) is not callable")
    return typing.cast(DetectorFactory, factory)


@functools.cache
def _schema(factory: DetectorFactory) -> type[BaseModel]:
    """A pydantic model of ``factory`` 's keyword parameters (see the module docstring)."""
    # A class's hints are its __init__'s (the first in its MRO that defines one).
    target: Any = factory
    if isinstance(factory, type):
        target = next(vars(c)["__init__"] for c in factory.__mro__ if "__init__" in vars(c))
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable annotations: fall back to the defaults' types
        hints = {}
    fields: dict[str, Any] = {}
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        hint = hints.get(p.name)
        if hint is None:
            has_default = p.default is not p.empty and p.default is not None
            hint = type(p.default) if has_default else Any
        fields[p.name] = (hint, ... if p.default is p.empty else p.default)
    return create_model(
        f"{getattr(factory, '__name__', 'detector')}Params",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
        **fields,
    )


def detector_params(
    name: str, params: Mapping[str, Any] | None = None, *, with_defaults: bool = True
) -> dict[str, Any]:
    """``params`` checked against detector ``name`` 's signature, converted to its types.

    ``with_defaults`` adds every parameter left out at its default value.  Raises
    :class:`DetectorConfigError` naming the first parameter at fault.
    """
    schema = _schema(detector_factory(name))
    try:
        checked = schema.model_validate(dict(params or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise DetectorConfigError(
                f"detector {name!r} has no parameter {param!r}; "
                f"it takes: {', '.join(schema.model_fields) or 'no parameters'}"
            ) from None
        raise DetectorConfigError(
            f"detector {name!r} parameter {param!r}: {err['msg']} (got {err['input']!r})"
        ) from None
    return checked.model_dump(exclude_unset=not with_defaults)


def detector_builder(
    name: str = DEFAULT_DETECTOR, params: Mapping[str, Any] | None = None
) -> Callable[[], ErrorDetector]:
    """A function that builds a fresh detector ``name`` with ``params`` on each call.

    Everything is checked now, so that a bad setting fails at start, not at the
    first labelled prediction: the name, the parameters, and that the factory
    returns a River drift detector.
    """
    factory = detector_factory(name)
    kwargs = detector_params(name, params, with_defaults=False)
    try:
        first = factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise DetectorConfigError(f"detector {name!r} refuses its parameters: {exc}") from exc
    if not is_drift_detector(first):
        raise DetectorConfigError(
            f"detector {name!r} built a {type(first).__name__}, not a River drift detector "
            "(subclass river.base.DriftDetector or river.base.BinaryDriftDetector)"
        )
    return functools.partial(factory, **kwargs)
