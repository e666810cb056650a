"""The root ``driftline`` command and its global ``--config`` option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from driftline.cli.context import CliState
from driftline.cli.demo.command import demo
from driftline.cli.dlq import dlq_app
from driftline.cli.eval_drift import register_eval_drift
from driftline.cli.features_export import features_app
from driftline.cli.infra_commands import infra_app
from driftline.cli.models import models_app
from driftline.cli.ops_commands import register_ops_commands
from driftline.cli.service_commands import register_service_commands

app = typer.Typer(
    name="driftline",
    help=(
        "Driftline: streaming MLOps on Kafka and Redis.\n\n"
        "Start the local platform with `driftline up` (Kafka, Redis and every built "
        "service), or only the infrastructure with `driftline infra up`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML settings file (overrides DRIFTLINE_CONFIG; DRIFTLINE_* variables win).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Global options."""
    ctx.obj = CliState(config=config)


app.add_typer(infra_app, name="infra")
app.add_typer(models_app, name="models")
app.add_typer(dlq_app, name="dlq")
app.add_typer(features_app, name="features")
register_service_commands(app)
app.command("demo")(demo)
register_eval_drift(app)
register_ops_commands(app)
