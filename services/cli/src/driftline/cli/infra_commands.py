"""``driftline infra up|down|status|fetch``: the local Kafka broker and redis-server."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from driftline.cli.context import console, err_console, progress, state
from driftline.cli.status_view import infra_table
from driftline.contracts.topics import ALL_TOPICS
from driftline.devtools.infra import InfraError, LocalPlatform, ensure_kafka_jars
from driftline.kafkaio import provision_topics

infra_app = typer.Typer(
    help=(
        "The local infrastructure: a real single-node Apache Kafka (KRaft) from "
        "Maven-fetched jars and a real redis-server, on loopback, with state, pid "
        "files and logs under infra.state_dir (.driftline/)."
    ),
    no_args_is_help=True,
)


def fail(exc: InfraError) -> typer.Exit:
    """Print an infrastructure error and return the exit to raise (status 1)."""
    err_console.print(f"driftline: {exc.message}", style="red", highlight=False, markup=False)
    return typer.Exit(1)


@infra_app.command("up")
def infra_up(
    ctx: typer.Context,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for both to answer (default: infra.ready_timeout_s)."),
    ] = None,
) -> None:
    """Start Kafka and Redis (in the background) and wait until both answer.

    A component that is already running is reported and not started twice.
    """
    platform = LocalPlatform(state(ctx).settings(), progress=progress)
    try:
        outcomes = platform.up(timeout)
    except InfraError as exc:
        raise fail(exc) from None
    for outcome in outcomes:
        console.print(outcome.describe(), highlight=False)
    settings = state(ctx).settings()
    created = asyncio.run(provision_topics(settings.kafka))
    console.print(
        f"topics: {len(created)} created, {len(ALL_TOPICS) - len(created)} already there",
        highlight=False,
    )


@infra_app.command("down")
def infra_down(
    ctx: typer.Context,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait after SIGTERM before SIGKILL.")
    ] = 30.0,
) -> None:
    """Stop the Kafka and Redis processes that `infra up` started (by their pid files)."""
    platform = LocalPlatform(state(ctx).settings(), progress=progress)
    for outcome in platform.down(timeout):
        console.print(outcome.describe(), highlight=False)


@infra_app.command("status")
def infra_status(ctx: typer.Context) -> None:
    """Show each component: running or stopped, pid, address, answering or not.

    Exits 0 when both run and answer, 1 otherwise.
    """
    platform = LocalPlatform(state(ctx).settings(), progress=progress)
    statuses = platform.status()
    console.print(infra_table(statuses))
    if not all(s.running and s.answering for s in statuses):
        raise typer.Exit(1)


@infra_app.command("fetch")
def infra_fetch(ctx: typer.Context) -> None:
    """Fetch the Kafka jars with Maven into infra.jar_cache (once per Kafka version)."""
    try:
        libs = ensure_kafka_jars(state(ctx).settings(), progress=progress)
    except InfraError as exc:
        raise fail(exc) from None
    console.print(f"Kafka jars: {libs}", highlight=False)
