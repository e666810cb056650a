"""What the local components share: pid file, log, port checks, start and stop."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from pathlib import Path

from driftline.devtools.infra.errors import StartupError
from driftline.devtools.infra.ports import ensure_port_free
from driftline.devtools.infra.process import ManagedProcess, StopOutcome
from driftline.devtools.infra.readiness import poll_until

__all__ = ["ComponentStatus", "LocalComponent", "PortClaim", "StartOutcome"]


@dataclass(frozen=True)
class PortClaim:
    """A port a component listens on, and the setting that chooses it."""

    host: str
    port: int
    what: str
    setting: str


@dataclass(frozen=True)
class StartOutcome:
    """What :meth:`LocalComponent.start` did."""

    name: str
    pid: int
    address: str
    already_running: bool
    seconds: float
    """Time from the call to the component answering (0 when it was already running)."""

    def describe(self) -> str:
        """One line for humans."""
        if self.already_running:
            return f"{self.name}: already running (pid {self.pid}) on {self.address}"
        return f"{self.name}: started (pid {self.pid}) on {self.address} in {self.seconds:.1f}s"


@dataclass(frozen=True)
class ComponentStatus:
    """One component as ``status`` sees it."""

    name: str
    running: bool
    pid: int | None
    address: str
    answering: bool
    log_file: Path

    @property
    def state(self) -> str:
        """``running`` or ``stopped``."""
        return "running" if self.running else "stopped"

    def describe(self) -> str:
        """One line for humans."""
        if not self.running:
            extra = " (but something answers there)" if self.answering else ""
            return f"{self.name}: stopped ({self.address}){extra}"
        answer = "answering" if self.answering else "NOT answering"
        return f"{self.name}: running (pid {self.pid}) on {self.address}, {answer}"


class LocalComponent(abc.ABC):
    """A server process with state under ``state_dir``: ``start``, ``stop``, ``status``."""

    name: str

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.expanduser().absolute()
        self.process = ManagedProcess(
            self.name,
            pid_file=self.state_dir / "run" / f"{self.name}.pid",
            log_file=self.state_dir / "logs" / f"{self.name}.log",
        )

    # -- what a component defines ---------------------------------------------
    @property
    @abc.abstractmethod
    def address(self) -> str:
        """Where clients reach it (``host:port``)."""

    @abc.abstractmethod
    def port_claims(self) -> list[PortClaim]:
        """Every port it listens on."""

    @abc.abstractmethod
    def prepare(self) -> list[str]:
        """Write config, create dirs, format storage…; return the command line to run."""

    @abc.abstractmethod
    def answering(self) -> bool:
        """Whether it answers a real request now."""

    def fetch(self) -> Path | None:
        """Download or build what it runs, once; nothing by default.

        The platform calls it before it launches anything, so that a first build
        (Jaeger's takes minutes) counts against no start-up timeout.
        """
        return None

    # -- shared behaviour -----------------------------------------------------
    @property
    def pid_file(self) -> Path:
        """Our pid file."""
        return self.process.pid_file

    @property
    def log_file(self) -> Path:
        """Where its stdout and stderr go."""
        return self.process.log_file

    def running_pid(self) -> int | None:
        """The pid of the process we started, if it is still running."""
        return self.process.running_pid()

    def check_ports(self) -> None:
        """Raise :class:`~driftline.devtools.infra.errors.PortInUseError` if any port is taken."""
        for claim in self.port_claims():
            ensure_port_free(claim.host, claim.port, what=claim.what, setting=claim.setting)

    def launch(self) -> int:
        """Prepare and spawn the process without waiting; return its pid."""
        argv = self.prepare()
        return self.process.spawn(argv, cwd=self.state_dir)

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until it answers; :class:`StartupError` with the log tail if it dies or times out.

        A process that is still running when the wait runs out is stopped.
        """
        dead = lambda: self.process.exit_code() is not None  # noqa: E731
        if poll_until(self.answering, timeout_s, is_dead=dead):
            return
        code = self.process.exit_code()
        if code is None:
            self.process.stop(timeout=10.0)
            why = f"did not answer within {timeout_s:g}s and was stopped"
        else:
            why = f"exited with status {code} while starting"
        raise StartupError(
            f"{self.name} {why}. Last lines of {self.log_file}:\n{self.process.log_tail(30)}"
        )

    def start(self, timeout_s: float = 90.0) -> StartOutcome:
        """Start (or find already running) and wait until it answers."""
        started = time.monotonic()
        pid = self.running_pid()
        if pid is not None:
            return StartOutcome(self.name, pid, self.address, True, 0.0)
        self.check_ports()
        pid = self.launch()
        self.wait_ready(timeout_s)
        return StartOutcome(self.name, pid, self.address, False, time.monotonic() - started)

    def stop(self, timeout_s: float = 30.0) -> StopOutcome:
        """Stop the process we started (SIGTERM, then SIGKILL after ``timeout_s``)."""
        return self.process.stop(timeout=timeout_s)

    def status(self) -> ComponentStatus:
        """Running or not, pid, address, and whether it answers."""
        pid = self.running_pid()
        return ComponentStatus(
            name=self.name,
            running=pid is not None,
            pid=pid,
            address=self.address,
            answering=self.answering(),
            log_file=self.log_file,
        )
