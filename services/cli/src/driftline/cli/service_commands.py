"""``driftline run | up | down | status``: the services on top of the infrastructure."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Annotated

import typer

from driftline.cli.context import (
    BrokersOption,
    CliState,
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
)
from driftline.cli.infra_commands import OpsOption, fail
from driftline.cli.status_view import infra_table, services_table
from driftline.cli.supervisor import (
    MAX_REPLICAS,
    SERVICE_NAMES,
    ServiceProcess,
    parse_replicas,
    replica_targets,
    running_replicas,
    service_built,
    service_module,
)
from driftline.devtools.infra import (
    InfraError,
    KafkaCluster,
    LocalComponent,
    LocalPlatform,
    ManagedProcess,
    StartupError,
    dashboard_links_env,
    provision_platform_topics,
    trace_export_env,
)
from driftline.settings.loader import CONFIG_ENV

SERVICES_HELP = ", ".join(SERVICE_NAMES)


def run(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help=f"One of: {SERVICES_HELP}.")],
) -> None:
    """Run one service in the foreground (execs `python -m driftline.<service>`).

    Extra arguments after the service name are passed to it.
    """
    if service not in SERVICE_NAMES:
        err_console.print(f"driftline: unknown service {service!r}; one of {SERVICES_HELP}")
        raise typer.Exit(2)
    cli = state(ctx)
    cli.settings()  # a bad configuration fails here, with exit 2
    if not service_built(service):
        err_console.print(f"service {service} is not built yet", highlight=False)
        raise typer.Exit(2)
    if cli.config is not None:
        os.environ[CONFIG_ENV] = str(cli.config.absolute())
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", service_module(service), *ctx.args]
    os.execv(sys.executable, argv)


def _services(cli: CliState, replicas: dict[str, int] | None = None) -> list[ServiceProcess]:
    """Every replica of every service: ``replicas`` of each (default 1), or with ``None``
    as many as have pid files (what an earlier ``up`` started)."""
    settings = cli.settings()
    counts = {
        name: (replicas or {}).get(name, 1) if replicas is not None
        else running_replicas(settings, name)
        for name in SERVICE_NAMES
    }  # fmt: skip
    return [
        ServiceProcess(name, settings, cli.config, replica=i)
        for name in SERVICE_NAMES
        for i in range(counts[name])
    ]


REPLICAS_HELP = (
    "Replicas of services, e.g. features=2,serving=2,training=2 (default 1 each). Replica i "
    "of a service is <service>-<i>: its ports are the service's + 100·i, its instance_id "
    "the service's + -<i>, its log <state_dir>/logs/<service>-<i>.log. At most: "
    + ", ".join(f"{name} {most}" for name, most in MAX_REPLICAS.items())
    + " (docs/scaling.md)."
)


def _replicas(text: str | None) -> dict[str, int]:
    try:
        return parse_replicas(text or "")
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--replicas'") from None


def _start_services(services: list[ServiceProcess], timeout: float) -> list[ServiceProcess]:
    """Start every built service not already running; wait for health; return those started."""
    started: list[ServiceProcess] = []
    waiting: list[ServiceProcess] = []
    for svc in services:
        if not svc.built:
            console.print(f"{svc.name}: service {svc.name} is not built yet", style="yellow")
            continue
        pid = svc.running_pid()
        if pid is not None:
            console.print(f"{svc.name}: already running (pid {pid})", highlight=False)
            continue
        svc.start()
        started.append(svc)
        waiting.append(svc)
    for svc in waiting:
        try:
            seconds = svc.wait_healthy(timeout)
        except StartupError as exc:
            err_console.print(exc.message, style="red", highlight=False, markup=False)
            continue
        where = svc.health_url if svc.admin_port else "(admin port 0: health not checked)"
        console.print(
            f"{svc.name}: healthy (pid {svc.running_pid()}) {where} in {seconds:.1f}s",
            highlight=False,
        )
    return started


CRASH_GRACE_S = 3.0
"""How long an ended process's pid file may stay before its end counts as a crash.

``driftline down`` removes a pid file just after the process is gone; this command
may see the exit first.
"""


def _wait_for_signal(processes: list[ManagedProcess]) -> bool:
    """Wait for Ctrl-C or SIGTERM; report a process that dies meanwhile.

    Returns ``True`` (without a signal) once every one of ``processes`` was stopped
    through its pid file (:meth:`ManagedProcess.was_stopped`: ``driftline down``
    did it), since nothing is left for this command to stop.  A process that ends
    and keeps its pid file died on its own: it is reported once, with the lines
    its log got since this command started it.
    """
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    ended_at: dict[str, float] = {}
    reported: set[str] = set()
    try:
        console.print("running; Ctrl-C stops everything", style="bold")
        while not stop.wait(0.5):
            if processes and all(p.was_stopped() for p in processes):
                return True
            now = time.monotonic()
            for proc in processes:
                code = proc.exit_code()
                if code is None or proc.was_stopped() or proc.name in reported:
                    continue
                if now - ended_at.setdefault(proc.name, now) < CRASH_GRACE_S:
                    continue
                reported.add(proc.name)
                err_console.print(
                    f"{proc.name} exited with status {code}; last lines of {proc.log_file} "
                    f"since it was started:\n{proc.log_tail(30)}",
                    style="red",
                    highlight=False,
                    markup=False,
                )
        return False
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def up(
    ctx: typer.Context,
    detach: Annotated[
        bool,
        typer.Option("--detach", "-d", help="Start everything in the background and return."),
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each service's /healthz.")
    ] = 60.0,
    ops: OpsOption = None,
    secure: SecureOption = False,
    redis_cluster: RedisClusterOption = False,
    brokers: BrokersOption = None,
    replicas: Annotated[str | None, typer.Option(help=REPLICAS_HELP)] = None,
) -> None:
    """Start Kafka, Redis, the ops stack and every built service, each as its own process.

    With the ops stack (Prometheus, Alertmanager, Jaeger), services this command
    starts export traces to the local Jaeger unless telemetry.otlp_endpoint is set.
    Logs go to <state_dir>/logs/<service>.log.  In the foreground, Ctrl-C or
    SIGTERM stops what this command started, and so does `driftline down` from
    another terminal (this command then exits, status 0); with --detach, use
    `driftline down`.  With --secure (or security.enabled) everything runs in secure
    mode: topics are then created here, as admin (services may not).
    """
    cli = state(ctx)
    counts = _replicas(replicas)
    use_secure_mode(cli, secure)
    use_redis_cluster(cli, redis_cluster)
    use_kafka_brokers(cli, brokers)
    settings = cli.settings()
    try:
        platform = LocalPlatform(settings, progress=progress, ops=ops)
        outcomes = platform.up()
        if isinstance(platform.kafka, KafkaCluster):
            use_bootstrap(cli, platform.kafka.bootstrap_servers)  # inherited by the services
            settings = cli.settings()
        if settings.security.enabled:
            provision_platform_topics(settings)
    except InfraError as exc:
        raise fail(exc) from None
    for outcome in outcomes:
        console.print(outcome.describe(), highlight=False)
    infra_started = {o.name for o in outcomes if not o.already_running}
    if platform.ops_enabled:
        for key, value in trace_export_env(settings, platform.ops.jaeger).items():
            os.environ[key] = value  # inherited by the services started below
            console.print(f"services export traces to Jaeger: {key}={value}", highlight=False)
        os.environ.update(dashboard_links_env(settings, platform.ops))
    for key, value in replica_targets(settings, counts).items():
        os.environ[key] = value  # inherited by the services started below
        console.print(f"clients reach every replica: {key}={value}", highlight=False)
    services = _services(cli, counts)
    started: list[ServiceProcess] = []
    components: list[LocalComponent] = platform.components
    try:
        started = _start_services(services, timeout)
        if detach:
            console.print("detached; `driftline down` stops everything", highlight=False)
            return
        watched = [svc.process for svc in started]
        watched += [p for c in components if c.name in infra_started for p in _processes(c)]
        if _wait_for_signal(watched):
            console.print(
                "everything this command started was stopped (`driftline down`); exiting",
                highlight=False,
            )
            return
    except KeyboardInterrupt:
        pass
    if detach:
        return
    console.print("shutting down…")
    for svc in reversed(started):
        console.print(svc.stop().describe(), highlight=False)
    for component in reversed(components):  # the ops stack first, Redis last
        if component.name in infra_started:
            console.print(component.stop().describe(), highlight=False)
        else:
            console.print(f"{component.name}: left running (it was up before)", highlight=False)


def _processes(component: LocalComponent) -> list[ManagedProcess]:
    """The processes of ``component``: its nodes' for a cluster (KafkaCluster, RedisCluster:
    the component's own process never runs), else its own."""
    nodes: list[LocalComponent] = getattr(component, "nodes", [component])
    return [node.process for node in nodes]


def down(
    ctx: typer.Context,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait after SIGTERM before SIGKILL.")
    ] = 30.0,
) -> None:
    """Stop the services `driftline up` started, then the ops stack, Kafka and Redis.

    A `driftline up` running in the foreground exits once all it started is stopped.
    """
    cli = state(ctx)
    for svc in reversed(_services(cli)):
        outcome = svc.stop(timeout)
        if outcome.pid is not None:
            console.print(outcome.describe(), highlight=False)
    for outcome in LocalPlatform(cli.settings(), progress=progress).down(timeout):
        console.print(outcome.describe(), highlight=False)


def status(ctx: typer.Context) -> None:
    """Show the infrastructure and every service: state, pid, address, health."""
    cli = state(ctx)
    platform = LocalPlatform(cli.settings(), progress=progress)
    console.print(infra_table(platform.status()))
    console.print(services_table([svc.status() for svc in _services(cli)]))


def register_service_commands(app: typer.Typer) -> None:
    """Add ``run``, ``up``, ``down`` and ``status`` to the root command."""
    app.command(
        "run",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(run)
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
