"""Which runtime serves which framework: the built-ins, installed plug-ins, and yours.

A version's runtime is chosen by the framework the registry recorded for it,
never by looking at the bytes.  Runtimes come from three places, later ones
winning: the four built in (river, sklearn, onnx, python), packages that declare
an entry point in the ``driftline.model_runtimes`` group (``name = "pkg.mod:Class"``),
and :func:`register_runtime` (the public extension point; tests use it).

>>> runtime_for("sklearn").__name__
'SklearnRuntime'
>>> try:
...     runtime_for("tensorflow")
... except FailedPreconditionError as exc:
...     print(exc.message)  # doctest: +ELLIPSIS
no runtime serves framework 'tensorflow'; known: onnx, python, river, sklearn...
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from driftline.contracts.errors import FailedPreconditionError
from driftline.model_runtimes.base import ModelRuntime, ModelSignature

__all__ = [
    "ENTRY_POINT_GROUP",
    "frameworks",
    "load_runtime",
    "register_runtime",
    "runtime_for",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "driftline.model_runtimes"
"""The entry-point group a package names its runtimes in."""

_registered: dict[str, type[ModelRuntime]] = {}
_discovered: dict[str, type[ModelRuntime]] | None = None


def _builtin() -> dict[str, type[ModelRuntime]]:
    from driftline.model_runtimes.onnx_runtime import OnnxRuntime
    from driftline.model_runtimes.python_runtime import PythonRuntime
    from driftline.model_runtimes.river_runtime import RiverRuntime
    from driftline.model_runtimes.sklearn_runtime import SklearnRuntime

    return {r.framework: r for r in (RiverRuntime, SklearnRuntime, OnnxRuntime, PythonRuntime)}


def _discover() -> dict[str, type[ModelRuntime]]:
    global _discovered
    if _discovered is None:
        found = _builtin()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in found and ep.value.startswith("driftline.model_runtimes."):
                continue  # the built-ins declare themselves too
            try:
                cls = ep.load()
            except Exception as exc:  # a broken plug-in must not take the built-ins down
                log.error("model runtime %r (%s) does not load: %s", ep.name, ep.value, exc)
                continue
            if not (isinstance(cls, type) and issubclass(cls, ModelRuntime)):
                log.error("model runtime %r (%s) is not a ModelRuntime", ep.name, ep.value)
                continue
            found[ep.name] = cls
        _discovered = found
    return _discovered


def register_runtime(runtime: type[ModelRuntime], *, framework: str | None = None) -> None:
    """Serve ``framework`` (default: ``runtime.framework``) with ``runtime`` from now on."""
    if not (isinstance(runtime, type) and issubclass(runtime, ModelRuntime)):
        raise TypeError(f"{runtime!r} is not a ModelRuntime subclass")
    _registered[framework or runtime.framework] = runtime


def frameworks() -> list[str]:
    """Every framework a runtime serves, sorted."""
    return sorted({**_discover(), **_registered})


def runtime_for(framework: str) -> type[ModelRuntime]:
    """The runtime class of ``framework``; :class:`FailedPreconditionError` when none."""
    runtime = _registered.get(framework) or _discover().get(framework)
    if runtime is None:
        raise FailedPreconditionError(
            f"no runtime serves framework {framework!r}; known: {', '.join(frameworks())}"
        )
    return runtime


def load_runtime(
    framework: str,
    artifact_format: str,
    data: bytes,
    signature: ModelSignature,
    spec: Mapping[str, Any],
) -> ModelRuntime:
    """The runtime of a version from its verified artifact bytes.

    Raises :class:`FailedPreconditionError` naming the problem: an unknown framework,
    a format the framework's runtime does not read, an artifact it cannot load.
    """
    runtime = runtime_for(framework)
    if artifact_format and artifact_format not in runtime.formats:
        raise FailedPreconditionError(
            f"artifact format {artifact_format!r} is not one the {framework} runtime reads "
            f"({', '.join(runtime.formats)})"
        )
    return runtime.from_artifact(data, signature, spec)
