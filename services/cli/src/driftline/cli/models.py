"""``driftline models list | show | register | promote | rollback | history``: the model registry.

Thin wiring over :mod:`driftline.cli.registry_views`; the registry is
reached at ``registry.grpc_host:registry.grpc_port`` with ``registry.token`` (in secure
mode over mutual TLS as ``admin``, or ``security.identity``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from driftline.cli import registry_views
from driftline.cli.context import console, err_console, state
from driftline.cli.registry_views import Row
from driftline.contracts.errors import DriftlineError
from driftline.specs import SpecError

T = TypeVar("T")

models_app = typer.Typer(
    help="Model versions and aliases in the registry (list, show, register, promote, roll back).",
    no_args_is_help=True,
)


def _ask(ctx: typer.Context, view: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a registry view at the configured registry; a refusal exits 1 with its message."""
    settings = state(ctx).settings()
    cfg = settings.registry
    target = f"{cfg.grpc_host}:{cfg.grpc_port}"
    try:
        return view(target, *args, token=cfg.token, security=settings.security, **kwargs)
    except DriftlineError as exc:
        err_console.print(f"driftline: {exc.message}", style="red", highlight=False, markup=False)
        raise typer.Exit(1) from None


def _say(text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


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
    rows = _ask(ctx, registry_views.models_list, name)
    _table(rows, "no models registered yet" if name is None else f"{name} has no versions")


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int | None, typer.Option(help="Version number.")] = None,
    alias: Annotated[str | None, typer.Option(help="champion, challenger or shadow.")] = None,
) -> None:
    """Show one version (the latest unless --version or --alias)."""
    text = _ask(ctx, registry_views.models_show, name, version, alias)
    _say(text)


class Framework(StrEnum):
    """Frameworks a model trained elsewhere can be registered as."""

    sklearn = "sklearn"
    onnx = "onnx"
    python = "python"


class PromoteTo(StrEnum):
    """Aliases a newly registered version can be pointed at."""

    champion = "champion"
    challenger = "challenger"


def _metrics(values: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            out[key] = float(raw)
        except ValueError:
            raise typer.BadParameter(
                f"{item!r} is not NAME=NUMBER", param_hint="--metric"
            ) from None
    return out


@models_app.command("register")
def models_register(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name (the spec's name).")],
    artifact: Annotated[
        Path,
        typer.Option(
            help="The model file: a pickle or joblib file (sklearn), .onnx, or your class's bytes.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    spec: Annotated[
        Path,
        typer.Option(
            help="Model spec YAML (name, featureset, task, framework, features …).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    framework: Annotated[
        Framework | None, typer.Option(help="Must match the spec's framework (default: it).")
    ] = None,
    artifact_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="sklearn-pickle or sklearn-joblib (default: by the file's suffix), onnx, "
            "python-bytes.",
        ),
    ] = None,
    promote: Annotated[
        PromoteTo | None, typer.Option(help="Point this alias at the new version.")
    ] = None,
    trained_on: Annotated[
        str, typer.Option(help="Where the training data came from (recorded with it).")
    ] = "",
    metric: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE offline metric to record (repeatable).")
    ] = None,
    actor: Annotated[str, typer.Option(help="Who registers it.")] = "cli",
) -> None:
    """Register a model trained outside Driftline (scikit-learn, LightGBM, XGBoost, ONNX,
    your own class): checked against its spec here and against its feature set by the
    registry. Exit 2: the spec or the artifact is wrong (nothing sent); 1: refused."""
    cfg = state(ctx).settings().registry
    metrics = _metrics(metric or [])
    try:
        prepared = registry_views.prepare_registration(
            name,
            spec,
            artifact,
            framework=framework.value if framework is not None else None,
            artifact_format=artifact_format,
            featuresets_dir=cfg.featuresets_dir,
        )
    except SpecError as exc:
        err_console.print(f"driftline: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(2) from None
    except DriftlineError as exc:
        err_console.print(
            f"driftline: {artifact}: {exc.message}", style="red", highlight=False, markup=False
        )
        raise typer.Exit(2) from None
    text = _ask(
        ctx,
        registry_views.models_register,
        prepared,
        promote=promote.value if promote is not None else None,
        trained_on=trained_on,
        metrics=metrics,
        actor=actor,
    )
    _say(text)


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
    line = _ask(
        ctx, registry_views.models_promote, name, version, alias, actor=actor, reason=reason
    )
    _say(line)


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
    line = _ask(
        ctx, registry_views.models_rollback, name, alias, as_of=when, actor=actor, reason=reason
    )
    _say(line)


@models_app.command("history")
def models_history(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Option(help="Only this alias.")] = "",
    limit: Annotated[int, typer.Option(help="Only the most recent N changes (0: all).")] = 0,
) -> None:
    """Every alias change of a model, oldest first, with actor and reason."""
    rows = _ask(ctx, registry_views.models_history, name, alias, limit)
    _table(rows, f"{name} has no alias changes")
