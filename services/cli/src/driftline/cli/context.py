"""What every command shares: the ``--config`` option, the settings it loads, the console."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console

from driftline.settings import ConfigError, PlatformSettings, load_settings

console = Console()
"""Normal output."""
err_console = Console(stderr=True)
"""Errors and progress."""


@dataclass
class CliState:
    """Global options, stored on the click context."""

    config: Path | None = None
    _settings: PlatformSettings | None = None

    def settings(self) -> PlatformSettings:
        """Settings from ``--config`` / ``DRIFTLINE_CONFIG`` / environment; exit 2 if invalid."""
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except ConfigError as exc:
                err_console.print(f"driftline: {exc}", style="red", highlight=False, markup=False)
                raise typer.Exit(2) from None
        return self._settings


def state(ctx: typer.Context) -> CliState:
    """The :class:`CliState` of the running command."""
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def progress(line: str) -> None:
    """Progress lines (jar fetching…) on stderr."""
    err_console.print(line, highlight=False, markup=False)
