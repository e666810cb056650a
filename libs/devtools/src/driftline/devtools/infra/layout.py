"""Where the repository's ``infra/`` directory (pom, templates) and the state files live."""

from __future__ import annotations

import os
from pathlib import Path

from driftline.devtools.infra.errors import InfraError

__all__ = ["INFRA_DIR_ENV", "find_infra_dir"]

INFRA_DIR_ENV = "DRIFTLINE_INFRA_DIR"
"""Environment variable naming the ``infra/`` directory, overriding the search."""

_MARKER = Path("kafka") / "pom.xml"


def _search(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / "infra"
        if (candidate / _MARKER).is_file():
            return candidate
    return None


def find_infra_dir(override: Path | str | None = None) -> Path:
    """The ``infra/`` directory holding ``kafka/pom.xml``.

    Order: ``override``, then ``$DRIFTLINE_INFRA_DIR``, then the first ``infra/``
    found walking up from the current directory, then from this package's file.
    """
    explicit = override if override is not None else os.environ.get(INFRA_DIR_ENV)
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not (path / _MARKER).is_file():
            raise InfraError(f"{path} has no {_MARKER} (set by {INFRA_DIR_ENV} or argument)")
        return path
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        found = _search(start)
        if found is not None:
            return found
    raise InfraError(
        "cannot find the Driftline infra/ directory (with kafka/pom.xml) above "
        f"{Path.cwd()}; run from the repository or set {INFRA_DIR_ENV}"
    )
