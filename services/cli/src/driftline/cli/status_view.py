"""Rich tables for ``driftline status`` and ``driftline infra status``."""

from __future__ import annotations

from rich.table import Table

from driftline.cli.supervisor import ServiceStatus
from driftline.devtools.infra import ComponentStatus


def _yes_no(flag: bool) -> str:
    return "[green]yes[/green]" if flag else "[red]no[/red]"


def infra_table(statuses: list[ComponentStatus]) -> Table:
    """One row per infrastructure component."""
    table = Table(title="infrastructure", title_justify="left")
    for column in ("component", "state", "pid", "address", "answering", "log"):
        table.add_column(column)
    for s in statuses:
        state = "[green]running[/green]" if s.running else "[dim]stopped[/dim]"
        table.add_row(
            s.name,
            state,
            str(s.pid) if s.pid is not None else "-",
            s.address,
            _yes_no(s.answering),
            str(s.log_file),
        )
    return table


def services_table(statuses: list[ServiceStatus]) -> Table:
    """One row per service."""
    table = Table(title="services", title_justify="left")
    for column in ("service", "state", "pid", "admin", "healthz", "log"):
        table.add_column(column)
    for s in statuses:
        if not s.built:
            state = "[yellow]not built[/yellow]"
        elif s.pid is not None:
            state = "[green]running[/green]"
        else:
            state = "[dim]stopped[/dim]"
        table.add_row(
            s.name,
            state,
            str(s.pid) if s.pid is not None else "-",
            s.admin_url,
            _yes_no(s.healthy) if s.built else "-",
            str(s.log_file) if s.built else "-",
        )
    return table
