"""The Driftline services as OS processes: which are built, start, health wait, stop.

Each service runs as ``python -m driftline.cli run <service>`` (which execs
``python -m driftline.<service>``, so the pid stays the same) in its own
session, with its log in ``<state_dir>/logs/<service>.log`` and its pid file in
``<state_dir>/run/<service>.pid``.  Replica *i* ≥ 1 of a service (``driftline up
--replicas``) is ``<service>-<i>``: its own log and pid file, its ports (admin, gRPC)
those of the service + 100·*i*, and its ``instance_id`` the service's + ``-<i>``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from driftline.devtools.infra import ManagedProcess, StartupError, StopOutcome
from driftline.security import http_tls
from driftline.settings import AdminSettings, PlatformSettings
from driftline.settings.loader import CONFIG_ENV
from driftline.settings.models import SERVICE_NAMES

__all__ = [
    "MAX_REPLICAS",
    "REPLICA_PORT_STEP",
    "SERVICE_NAMES",
    "ServiceProcess",
    "ServiceStatus",
    "parse_replicas",
    "replica_targets",
    "running_replicas",
    "service_built",
    "service_module",
]

REPLICA_PORT_STEP = 100
"""Replica *i* of a service listens on the service's ports + this·*i*."""

MAX_REPLICAS: Mapping[str, int] = {
    "ingestion": 12,  # the partitions of driftline.events and driftline.labels
    "features": 6,  # the partitions of driftline.events.valid
    "training": 3,  # one active trainer, the others standbys
    "registry": 3,
    "serving": 8,
    "monitoring": 3,  # one active monitor, the others standbys
}
"""The most replicas ``driftline up --replicas`` runs of each service (docs/scaling.md)."""


def parse_replicas(text: str) -> dict[str, int]:
    """``features=2,serving=2`` → ``{"features": 2, "serving": 2}``; ValueError naming the
    part at fault.

    >>> parse_replicas("features=2, serving=3")
    {'features': 2, 'serving': 3}
    >>> parse_replicas("monitoring=4")
    Traceback (most recent call last):
    ...
    ValueError: monitoring=4: monitoring runs at most 3 replicas (docs/scaling.md)
    """
    counts: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, count = part.partition("=")
        name = name.strip()
        if name not in SERVICE_NAMES:
            raise ValueError(f"{part}: unknown service {name!r}; one of {', '.join(SERVICE_NAMES)}")
        if not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"{part}: expected <service>=<count>, a count of 1 or more")
        if int(count) > MAX_REPLICAS[name]:
            raise ValueError(
                f"{part}: {name} runs at most {MAX_REPLICAS[name]} "
                f"replica{'s' if MAX_REPLICAS[name] > 1 else ''} (docs/scaling.md)"
            )
        counts[name] = int(count)
    return counts


_CLIENTS: tuple[tuple[str, str, str], ...] = (
    ("serving", "features_target", "features"),
    ("serving", "registry_target", "registry"),
    ("training", "registry_target", "registry"),
)
"""(client service, its target setting, the service it reaches)."""


def replica_targets(settings: PlatformSettings, counts: Mapping[str, int]) -> dict[str, str]:
    """Variables that give each gRPC client every replica of the service it reaches.

    A target still at that service's replica 0 (``host:port`` of its own ``grpc_port``)
    becomes ``ipv4:host:port,host:port+100,…``: gRPC's default ``pick_first`` moves to the
    next address when one stops answering.  A target set to anything else is left alone.

    >>> from driftline.settings import PlatformSettings
    >>> replica_targets(PlatformSettings(), {"registry": 2})["DRIFTLINE_TRAINING__REGISTRY_TARGET"]
    'ipv4:127.0.0.1:50052,127.0.0.1:50152'
    """
    env: dict[str, str] = {}
    for client, setting, service in _CLIENTS:
        count = counts.get(service, 1)
        target = str(getattr(getattr(settings, client), setting))
        port = int(getattr(settings, service).grpc_port)
        host, _, at = target.rpartition(":")
        if count < 2 or not port or at != str(port) or host.startswith("ipv4:"):
            continue
        addresses = [f"{host}:{port + REPLICA_PORT_STEP * i}" for i in range(count)]
        env[f"DRIFTLINE_{client.upper()}__{setting.upper()}"] = "ipv4:" + ",".join(addresses)
    return env


def running_replicas(settings: PlatformSettings, name: str) -> int:
    """How many replicas of ``name`` have pid files (so ``down`` stops them all)."""
    run_dir = settings.infra.state_dir.expanduser().absolute() / "run"
    pattern = re.compile(rf"^{re.escape(name)}-(\d+)\.pid$")
    found = [int(m.group(1)) for f in run_dir.glob(f"{name}-*.pid") if (m := pattern.match(f.name))]
    return max(found, default=0) + 1


def service_module(name: str) -> str:
    """The module ``python -m`` runs for service ``name``."""
    return f"driftline.{name}"


def service_built(name: str) -> bool:
    """Whether ``driftline.<name>`` exists with a ``__main__`` (checked without importing it)."""
    try:
        spec = importlib.util.find_spec(service_module(name))
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    locations = spec.submodule_search_locations or []
    return any((Path(loc) / "__main__.py").is_file() for loc in locations)


@dataclass(frozen=True)
class ServiceStatus:
    """One service as ``driftline status`` sees it."""

    name: str
    built: bool
    pid: int | None
    admin_url: str
    healthy: bool
    log_file: Path


class ServiceProcess:
    """One service process managed by ``driftline up`` / ``down``."""

    def __init__(
        self,
        name: str,
        settings: PlatformSettings,
        config: Path | None = None,
        *,
        replica: int = 0,
    ) -> None:
        if name not in SERVICE_NAMES:
            raise ValueError(f"unknown service {name!r}; one of {', '.join(SERVICE_NAMES)}")
        self.service = name
        self.replica = replica
        self.name = name if replica == 0 else f"{name}-{replica}"
        """The process's name: the service's, ``<service>-<i>`` for replica *i* ≥ 1."""
        self.config = config
        state_dir = settings.infra.state_dir.expanduser().absolute()
        self.process = ManagedProcess(
            self.name,
            pid_file=state_dir / "run" / f"{self.name}.pid",
            log_file=state_dir / "logs" / f"{self.name}.log",
        )
        section = getattr(settings, name)
        admin: AdminSettings = section.admin
        shift = REPLICA_PORT_STEP * replica
        self.admin_port = admin.port + shift if admin.port else 0
        self.env: dict[str, str] = {}
        """Settings of this replica that differ from the service's (as variables)."""
        if replica:
            prefix = f"DRIFTLINE_{name.upper()}__"
            if admin.port:
                self.env[f"{prefix}ADMIN__PORT"] = str(self.admin_port)
            grpc_port = getattr(section, "grpc_port", 0)
            if grpc_port:
                self.env[f"{prefix}GRPC_PORT"] = str(grpc_port + shift)
            if hasattr(section, "instance_id"):
                self.env[f"{prefix}INSTANCE_ID"] = f"{section.instance_id}-{replica}"
        self.health_url = http_tls.url(admin.host, self.admin_port, settings.security, "/healthz")
        self._security = settings.security

    @property
    def built(self) -> bool:
        """Whether the service's module exists."""
        return service_built(self.service)

    @property
    def log_file(self) -> Path:
        """Where its output goes."""
        return self.process.log_file

    def running_pid(self) -> int | None:
        """Its pid if it is running (from our pid file)."""
        return self.process.running_pid()

    def command(self) -> list[str]:
        """``python -m driftline.cli [--config F] run <name>``."""
        argv = [sys.executable, "-m", "driftline.cli"]
        if self.config is not None:
            argv += ["--config", str(self.config.absolute())]
        return [*argv, "run", self.service]

    def start(self) -> int:
        """Spawn it detached (cwd = the current directory); return its pid."""
        env = {**os.environ, **self.env}
        if self.config is not None:
            env[CONFIG_ENV] = str(self.config.absolute())
        return self.process.spawn(self.command(), cwd=Path.cwd(), env=env)

    def healthy(self, timeout_s: float = 1.0) -> bool:
        """Whether ``GET /healthz`` on its admin port answers 200 (in secure mode over
        HTTPS, the service verified against the CA, as the admin identity)."""
        if self.admin_port == 0:
            return False
        try:
            # Built per call: the credentials may appear after this object (`up --secure`).
            context = http_tls.client_context(self._security, "admin")
            with urllib.request.urlopen(
                self.health_url, timeout=timeout_s, context=context
            ) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_healthy(self, timeout_s: float) -> float:
        """Wait for ``/healthz`` → 200; return seconds taken; :class:`StartupError` otherwise."""
        started = time.monotonic()
        if self.admin_port == 0:
            return 0.0
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.healthy():
                return time.monotonic() - started
            code = self.process.exit_code()
            if code is not None:
                raise StartupError(
                    f"{self.name} exited with status {code} while starting. "
                    f"Last lines of {self.log_file}:\n{self.process.log_tail(30)}"
                )
            time.sleep(0.2)
        raise StartupError(
            f"{self.name}: {self.health_url} did not answer 200 within {timeout_s:g}s. "
            f"Last lines of {self.log_file}:\n{self.process.log_tail(30)}"
        )

    def stop(self, timeout_s: float = 20.0) -> StopOutcome:
        """SIGTERM, wait, SIGKILL: only the process named by our pid file."""
        return self.process.stop(timeout=timeout_s)

    def status(self) -> ServiceStatus:
        """Built or not, pid, admin URL, health."""
        pid = self.running_pid()
        return ServiceStatus(
            name=self.name,
            built=self.built,
            pid=pid,
            admin_url=self.health_url.removesuffix("/healthz"),
            healthy=pid is not None and self.healthy(),
            log_file=self.log_file,
        )
