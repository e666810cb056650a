"""Libraries point in the direction of use.

The runtime services never depend on the developer tools (the local-platform
launcher, scenario streams and demo environment in ``driftline-devtools``), neither
directly nor through a library; the registry's contract (``driftline-registry-api``)
depends on neither its service nor its client, and the registry service on no client.
Read from each distribution's ``pyproject.toml`` (the dependencies a wheel would carry)
and from the import lines of its source, so a stray import fails here as well.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

RUNTIME_SERVICES = ("features", "ingestion", "monitoring", "registry", "serving", "training")
DEVTOOLS = "driftline-devtools"


def _distributions() -> dict[str, Path]:
    """Workspace distribution name -> its directory."""
    out: dict[str, Path] = {}
    for pyproject in sorted(
        [*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")]
    ):
        name = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"]
        out[canonicalize_name(name)] = pyproject.parent
    return out


DISTRIBUTIONS = _distributions()


def _direct(name: str) -> set[str]:
    """The workspace distributions ``name`` lists in its ``[project] dependencies``."""
    project = tomllib.loads((DISTRIBUTIONS[name] / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = (Requirement(r) for r in project["project"].get("dependencies", []))
    return {canonicalize_name(r.name) for r in requirements} & DISTRIBUTIONS.keys()


def _closure(name: str) -> dict[str, list[str]]:
    """Every workspace distribution ``name`` depends on, with one path that pulls it in."""
    paths: dict[str, list[str]] = {name: [name]}
    todo = [name]
    while todo:
        current = todo.pop()
        for dep in sorted(_direct(current)):
            if dep not in paths:
                paths[dep] = [*paths[current], dep]
                todo.append(dep)
    del paths[name]
    return paths


def _importers(directory: Path, module: str) -> list[str]:
    """``file:line`` of every import of ``module`` (or a submodule) under ``directory``."""
    pattern = re.compile(rf"^\s*(from|import)\s+{re.escape(module)}(\.|\s|$)")
    hits = []
    for path in sorted(directory.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.match(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}")
    return hits


def test_every_runtime_service_is_a_workspace_distribution() -> None:
    for service in RUNTIME_SERVICES:
        assert f"driftline-{service}" in DISTRIBUTIONS, f"services/{service} has no pyproject"


@pytest.mark.parametrize("service", RUNTIME_SERVICES)
def test_runtime_service_does_not_depend_on_devtools(service: str) -> None:
    name = f"driftline-{service}"
    closure = _closure(name)
    for forbidden in (DEVTOOLS, "driftline-cli"):
        assert forbidden not in closure, (
            f"{name} depends on {forbidden} via {' -> '.join(closure.get(forbidden, []))}: "
            "developer tools and the CLI are never part of a runtime service"
        )
    imports = _importers(DISTRIBUTIONS[name] / "src", "driftline.devtools")
    assert not imports, f"{name} imports driftline.devtools at {', '.join(imports)}"


def test_registry_contract_points_away_from_service_and_client() -> None:
    api = _closure("driftline-registry-api")
    for forbidden in ("driftline-registry", "driftline-registry-client"):
        assert forbidden not in api, f"driftline-registry-api depends on {forbidden}"
    service = _closure("driftline-registry")
    assert "driftline-registry-api" in service, "the registry service must use its contract"
    assert "driftline-registry-client" not in service, (
        "the registry service depends on its client via "
        + " -> ".join(service["driftline-registry-client"])
    )
    imports = _importers(DISTRIBUTIONS["driftline-registry"] / "src", "driftline.registry_client")
    assert not imports, f"the registry service imports its client at {', '.join(imports)}"


def test_no_library_imports_the_cli() -> None:
    for name, directory in DISTRIBUTIONS.items():
        if name == "driftline-cli":
            continue
        imports = _importers(directory / "src", "driftline.cli")
        assert not imports, f"{name} imports the CLI at {', '.join(imports)}"
