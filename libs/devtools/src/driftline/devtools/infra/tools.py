"""Locating the executables the local platform runs, with install hints when missing."""

from __future__ import annotations

import os
import shutil

from driftline.devtools.infra.errors import MissingToolError

__all__ = ["INSTALL_HINTS", "require_tool"]

INSTALL_HINTS: dict[str, str] = {
    "java": "Java 17 or newer: `sudo apt-get install openjdk-17-jre-headless` "
    "(macOS: `brew install openjdk@17`)",
    "mvn": "Maven, which fetches the Kafka jars once: `sudo apt-get install maven` "
    "(macOS: `brew install maven`)",
    "redis-server": "Redis: `sudo apt-get install redis-server` (macOS: `brew install redis`)",
    "redis-cli": "the Redis client: `sudo apt-get install redis-tools`",
    "kcat": "kcat: `sudo apt-get install kcat` (macOS: `brew install kcat`)",
    "prometheus": "Prometheus: `sudo apt-get install prometheus` "
    "(macOS: `brew install prometheus`)",
    "promtool": "promtool: `sudo apt-get install prometheus`",
    "prometheus-alertmanager": "Alertmanager: `sudo apt-get install prometheus-alertmanager`",
    "alertmanager": "Alertmanager: `brew install alertmanager`",
    "amtool": "amtool: `sudo apt-get install prometheus-alertmanager`",
    "go": "Go 1.24 or newer, which builds Jaeger once: `sudo apt-get install golang-go` "
    "(macOS: `brew install go`)",
}


def require_tool(name: str, *, setting: str | None = None) -> str:
    """The full path of executable ``name``; :class:`MissingToolError` saying what to install."""
    found = shutil.which(name)
    if found is not None:
        return found
    base = os.path.basename(name)
    hint = INSTALL_HINTS.get(base, f"install `{base}`")
    where = f" (set by {setting})" if setting else ""
    raise MissingToolError(f"`{name}`{where} was not found on PATH; install {hint}")
