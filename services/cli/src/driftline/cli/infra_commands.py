"""``driftline infra up|down|status|fetch``: the local Kafka broker, redis-server and ops stack."""

from __future__ import annotations

from typing import Annotated

import typer

from driftline.cli.context import (
    BrokersOption,
    RedisClusterOption,
    SecureOption,
    console,
    err_console,
    progress,
    state,
    use_bootstrap,
    use_kafka_brokers,
    use_redis_cluster,
    use_secure_mode,
    write_secure_env,
)
from driftline.cli.status_view import infra_table
from driftline.contracts.topics import ALL_TOPICS
from driftline.devtools.infra import (
    InfraError,
    KafkaCluster,
    LocalPlatform,
    ensure_helm,
    ensure_jaeger,
    ensure_kafka_jars,
    provision_platform_topics,
)

infra_app = typer.Typer(
    help=(
        "The local infrastructure: a real single-node Apache Kafka (KRaft) from "
        "Maven-fetched jars and a real redis-server, and the ops stack (Prometheus, "
        "Alertmanager, Jaeger), on loopback, with state, pid files and logs under "
        "infra.state_dir (.driftline/)."
    ),
    no_args_is_help=True,
)

OpsOption = Annotated[
    bool | None,
    typer.Option(
        "--ops/--no-ops",
        help="Start the ops stack (Prometheus, Alertmanager, alert sink, Jaeger) too "
        "(default: infra.ops.enabled, true).",
        show_default=False,
    ),
]
"""``--ops/--no-ops`` of every command that starts the platform."""


def fail(exc: InfraError) -> typer.Exit:
    """Print an infrastructure error and return the exit to raise (status 1)."""
    err_console.print(f"driftline: {exc.message}", style="red", highlight=False, markup=False)
    return typer.Exit(1)


@infra_app.command("up")
def infra_up(
    ctx: typer.Context,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for all to answer (default: infra.ready_timeout_s)."),
    ] = None,
    ops: OpsOption = None,
    secure: SecureOption = False,
    redis_cluster: RedisClusterOption = False,
    brokers: BrokersOption = None,
) -> None:
    """Start Kafka, Redis and the ops stack (in the background) and wait until all answer.

    A component that is already running is reported and not started twice.
    The first start builds Jaeger with Go (minutes; `driftline infra fetch` does it
    ahead).  With --secure, Kafka and Redis run in secure mode and
    <state_dir>/secure.env holds what puts other processes in it.
    """
    use_secure_mode(state(ctx), secure)
    use_redis_cluster(state(ctx), redis_cluster)
    use_kafka_brokers(state(ctx), brokers)
    try:
        platform = LocalPlatform(state(ctx).settings(), progress=progress, ops=ops)
        outcomes = platform.up(timeout)
    except InfraError as exc:
        raise fail(exc) from None
    if isinstance(platform.kafka, KafkaCluster):
        use_bootstrap(state(ctx), platform.kafka.bootstrap_servers)
    for outcome in outcomes:
        console.print(outcome.describe(), highlight=False)
    settings = state(ctx).settings()
    created = provision_platform_topics(settings)
    console.print(
        f"topics: {len(created)} created, {len(ALL_TOPICS) - len(created)} already there",
        highlight=False,
    )
    if settings.security.enabled:
        env_file = write_secure_env(settings)
        console.print(
            f"secure mode: credentials in {settings.security.credentials_dir}; other processes "
            f"join it with the variables in {env_file} (set -a; . {env_file}; set +a)",
            highlight=False,
        )


@infra_app.command("down")
def infra_down(
    ctx: typer.Context,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait after SIGTERM before SIGKILL.")
    ] = 30.0,
) -> None:
    """Stop the processes that `infra up` started (by their pid files), ops stack included."""
    platform = LocalPlatform(state(ctx).settings(), progress=progress)
    for outcome in platform.down(timeout):
        console.print(outcome.describe(), highlight=False)


@infra_app.command("status")
def infra_status(ctx: typer.Context) -> None:
    """Show each component: running or stopped, pid, address, answering or not.

    Exits 0 when all run and answer, 1 otherwise.
    """
    platform = LocalPlatform(state(ctx).settings(), progress=progress)
    statuses = platform.status()
    console.print(infra_table(statuses))
    if not all(s.running and s.answering for s in statuses):
        raise typer.Exit(1)


@infra_app.command("fetch")
def infra_fetch(
    ctx: typer.Context,
    ops: Annotated[
        bool | None,
        typer.Option(
            "--ops/--no-ops",
            help="Build Jaeger too (default: infra.ops.enabled).",
            show_default=False,
        ),
    ] = None,
    helm: Annotated[
        bool,
        typer.Option(
            "--helm/--no-helm",
            help="Build Helm too (the Helm chart's tests lint and render it with Helm).",
        ),
    ] = True,
) -> None:
    """Fetch the Kafka jars with Maven into infra.jar_cache, and build Jaeger and Helm with Go.

    Each once per version: Jaeger goes to infra.ops.jaeger_cache, Helm to
    ~/.cache/driftline/helm.
    """
    settings = state(ctx).settings()
    try:
        libs = ensure_kafka_jars(settings, progress=progress)
        console.print(f"Kafka jars: {libs}", highlight=False)
        if settings.infra.ops.enabled if ops is None else ops:
            console.print(f"Jaeger: {ensure_jaeger(settings, progress=progress)}", highlight=False)
        if helm:
            console.print(f"Helm: {ensure_helm(settings, progress=progress)}", highlight=False)
    except InfraError as exc:
        raise fail(exc) from None
