"""What every command shares: the ``--config`` option, the settings it loads, the console."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

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


SECURE_ENV = "DRIFTLINE_SECURITY__ENABLED"
"""The variable ``--secure`` sets, so the services a command starts inherit secure mode."""

SecureOption = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="Secure mode (security.enabled): make the local CA, certificates and secrets "
        "under security.credentials_dir if missing, run Kafka (SASL_SSL, ACLs) and Redis "
        "(TLS, ACL users) secure, and start services with TLS/mTLS, registry roles and API "
        "keys. See docs/security.md.",
    ),
]
"""``--secure`` of every command that starts the platform."""


CLUSTER_ENV = "DRIFTLINE_REDIS__CLUSTER"
"""The variable ``--redis-cluster`` sets, so the services a command starts inherit it."""

RedisClusterOption = Annotated[
    bool,
    typer.Option(
        "--redis-cluster",
        help="Run Redis as a local Redis Cluster (six redis-server processes: three masters "
        "with a replica each, on redis.port and the five ports after it) and give the "
        "services redis.cluster=true. See docs/scaling.md.",
    ),
]
"""``--redis-cluster`` of the commands that start the platform."""


def use_redis_cluster(cli: CliState, cluster: bool) -> None:
    """With ``cluster``, use a Redis Cluster in this process and every process it starts."""
    if cluster:
        os.environ[CLUSTER_ENV] = "true"
        cli._settings = None


BROKERS_ENV = "DRIFTLINE_INFRA__KAFKA_BROKERS"
"""The variable ``--brokers`` sets, so the services a command starts inherit it."""
REPLICATION_ENV = "DRIFTLINE_KAFKA__DEFAULT_REPLICATION_FACTOR"
"""Set with :data:`BROKERS_ENV`: topics are provisioned with one replica per broker."""
BOOTSTRAP_ENV = "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"
"""Set to every node of the local Kafka cluster once it is known (:func:`use_bootstrap`)."""

BrokersOption = Annotated[
    int | None,
    typer.Option(
        "--brokers",
        min=1,
        max=3,
        help="Run Kafka as 1 node or as a local cluster of 3 KRaft nodes (each a broker and "
        "a controller; node 1 on kafka.bootstrap_servers, nodes 2 and 3 on its port + 100 "
        "and + 200) whose topics have 3 replicas and min.insync.replicas=2 "
        "(default: infra.kafka_brokers, 1). See docs/scaling.md.",
        show_default=False,
    ),
]
"""``--brokers`` of the commands that start the platform."""


def use_kafka_brokers(cli: CliState, brokers: int | None) -> None:
    """With ``brokers``, run that many Kafka nodes and provision topics with that many
    replicas, in this process and every process it starts."""
    if brokers is not None:
        os.environ[BROKERS_ENV] = str(brokers)
        os.environ[REPLICATION_ENV] = str(brokers)
        cli._settings = None


def use_bootstrap(cli: CliState, bootstrap_servers: str) -> None:
    """Give this process and every process it starts ``bootstrap_servers`` (all nodes of
    the local Kafka cluster: a client starting while node 1 is down still finds it)."""
    if cli.settings().kafka.bootstrap_servers != bootstrap_servers:
        os.environ[BOOTSTRAP_ENV] = bootstrap_servers
        cli._settings = None


def use_secure_mode(cli: CliState, secure: bool) -> None:
    """With ``secure``, turn secure mode on for this process and every process it starts
    (before the settings are read)."""
    if secure:
        os.environ[SECURE_ENV] = "true"
        cli._settings = None


def write_secure_env(settings: PlatformSettings) -> Path:
    """``<state_dir>/secure.env``: the variables that put a process in this platform's
    secure mode (no secret in it: the credentials stay in their files)."""
    root = settings.security.credentials_dir.expanduser().absolute()
    path = settings.infra.state_dir / "secure.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"{SECURE_ENV}=true\nDRIFTLINE_SECURITY__CREDENTIALS_DIR={root}\n", encoding="utf-8"
    )
    return path


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
