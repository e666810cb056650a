"""``driftline models list | show | promote | rollback | history``: the model registry.

Thin wiring over :mod:`driftline.registry_client.cli_commands`; the registry is
reached at ``registry.grpc_host:registry.grpc_port`` with ``registry.token``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from driftline.cli.context import console, err_console, state
from driftline.contracts.errors import DriftlineError
from driftline.registry_client import cli_commands
from driftline.registry_client.cli_commands import Row

models_app = typer.Typer(
    help="Model versions and aliases in the registry (list, show, promote, roll back).",
    no_args_is_help=True,
)


def _target(ctx: typer.Context) -> tuple[str, str | None]:
    cfg = state(ctx).settings().registry
    return f"{cfg.grpc_host}:{cfg.grpc_port}", cfg.token


def _fail(exc: DriftlineError) -> typer.Exit:
    err_console.print(f"driftline: {exc.message}", style="red", highlight=False, markup=False)
    return typer.Exit(1)


def _table(rows: list[Row], empty: str) -> None:
    if not rows:
        console.print(empty)
        return
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*row.values())
    console.print(table)


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A model: list its versions.")] = None,
) -> None:
    """List models, or the versions of one model."""
    target, token = _target(ctx)
    try:
        rows = cli_commands.models_list(target, name, token=token)
    except DriftlineError as exc:
        raise _fail(exc) from None
    _table(rows, "no models registered yet" if name is None else f"{name} has no versions")


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int | None, typer.Option(help="Version number.")] = None,
    alias: Annotated[str | None, typer.Option(help="champion, challenger or shadow.")] = None,
) -> None:
    """Show one version (the latest unless --version or --alias)."""
    target, token = _target(ctx)
    try:
        text = cli_commands.models_show(target, name, version, alias, token=token)
    except DriftlineError as exc:
        raise _fail(exc) from None
    console.print(text, highlight=False, markup=False)


@models_app.command("promote")
def models_promote(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version to point the alias at.")],
    alias: Annotated[str, typer.Option(help="champion, challenger or shadow.")] = "champion",
    reason: Annotated[str, typer.Option(help="Recorded in the audit trail.")] = "",
    actor: Annotated[str, typer.Option(help="Who does it.")] = "cli",
) -> None:
    """Point an alias (champion by default) at a version."""
    target, token = _target(ctx)
    try:
        line = cli_commands.models_promote(
            target, name, version, alias, actor=actor, reason=reason, token=token
        )
    except DriftlineError as exc:
        raise _fail(exc) from None
    console.print(line, highlight=False, markup=False)


@models_app.command("rollback")
def models_rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Option(help="The alias to move back.")] = "champion",
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of",
            help="Restore the version the alias pointed at at this time (UTC unless given).",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"],
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Recorded in the audit trail.")] = "",
    actor: Annotated[str, typer.Option(help="Who does it.")] = "cli",
) -> None:
    """Roll an alias back to its previous version (or to where it pointed --as-of a time)."""
    when = as_of.replace(tzinfo=UTC) if as_of is not None and as_of.tzinfo is None else as_of
    target, token = _target(ctx)
    try:
        line = cli_commands.models_rollback(
            target, name, alias, as_of=when, actor=actor, reason=reason, token=token
        )
    except DriftlineError as exc:
        raise _fail(exc) from None
    console.print(line, highlight=False, markup=False)


@models_app.command("history")
def models_history(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Option(help="Only this alias.")] = "",
    limit: Annotated[int, typer.Option(help="Only the most recent N changes (0: all).")] = 0,
) -> None:
    """Every alias change of a model, oldest first, with actor and reason."""
    target, token = _target(ctx)
    try:
        rows = cli_commands.models_history(target, name, alias, limit, token=token)
    except DriftlineError as exc:
        raise _fail(exc) from None
    _table(rows, f"{name} has no alias changes")
