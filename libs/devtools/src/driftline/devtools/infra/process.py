"""A detached OS process tracked by a pid file: spawn, watch, stop, read its log.

The same mechanism runs the Kafka broker, redis-server and the Driftline
services (``driftline up --detach``): each runs in its own session (so a
Ctrl-C in the terminal does not reach it and ``stop`` can signal its whole
process group), with stdout and stderr appended to one log file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from driftline.devtools.infra.pidfile import (
    PidRecord,
    pid_alive,
    process_start_ticks,
    read_pid_file,
    remove_pid_file,
    running_pid,
    write_pid_file,
)

__all__ = ["ManagedProcess", "StopOutcome", "tail_lines"]


@dataclass(frozen=True)
class StopOutcome:
    """What :meth:`ManagedProcess.stop` did."""

    name: str
    pid: int | None
    """The pid that was stopped; ``None`` when nothing of ours was running."""
    forced: bool = False
    """Whether SIGKILL was needed after the grace period."""

    def describe(self) -> str:
        """One line for humans."""
        if self.pid is None:
            return f"{self.name}: not running"
        how = "killed (SIGKILL after the grace period)" if self.forced else "stopped"
        return f"{self.name}: {how} (pid {self.pid})"


def tail_lines(path: Path, lines: int = 30, start: int = 0) -> str:
    """The last ``lines`` lines of ``path`` from byte ``start`` on (empty if it does not exist).

    ``start`` is where one run's output begins in a log that every run appends to;
    a file now shorter than ``start`` was truncated or replaced, so all of it is read.
    """
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if start > size:
                start = 0
            handle.seek(max(start, size - 256 * 1024))
            data = handle.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One named process with a pid file and a log file."""

    def __init__(self, name: str, pid_file: Path, log_file: Path) -> None:
        self.name = name
        self.pid_file = pid_file
        self.log_file = log_file
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        """Size of the log when :meth:`spawn` started the process: its own lines come after."""

    def running_pid(self) -> int | None:
        """The pid of our process if it is running (pid file, alive, same start time)."""
        if self._popen is not None and self._popen.poll() is not None:
            return None
        return running_pid(self.pid_file)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> int:
        """Start ``argv`` detached, logging to :attr:`log_file`; write the pid file; return pid."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._log_start = log.seek(0, os.SEEK_END)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} driftline: starting {self.name} ===\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                close_fds=True,
            )
        pid = self._popen.pid
        write_pid_file(
            self.pid_file,
            PidRecord(
                pid=pid,
                start_ticks=process_start_ticks(pid),
                extra={"name": self.name, "command": " ".join(argv)},
            ),
        )
        return pid

    def was_stopped(self) -> bool:
        """Whether the process :meth:`spawn` started has ended and its pid file no longer names it.

        :meth:`stop` removes the pid file, whichever process calls it (``driftline
        down`` stops what a foreground ``driftline up`` spawned); a process that dies
        on its own leaves it behind.  So, once it has ended, this tells "stopped" from
        "crashed" (a pid file removed by hand counts as stopped).
        """
        if self._popen is None or self._popen.poll() is None:
            return False
        record = read_pid_file(self.pid_file)
        return record is None or record.pid != self._popen.pid

    def exit_code(self) -> int | None:
        """The exit status once our process has ended (``-1`` if unknown), else ``None``."""
        if self._popen is not None:
            return self._popen.poll()
        record = read_pid_file(self.pid_file)
        if record is None or not pid_alive(record.pid):
            return -1
        return None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log, from the start of the process we spawned on.

        Every run appends to the same log: lines of an earlier run would describe
        another process (and, after a short-lived start, fill the whole tail).
        """
        return tail_lines(self.log_file, lines, start=self._log_start)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process group of our running process (no-op if not running)."""
        pid = self.running_pid()
        if pid is not None:
            _signal_group(pid, sig)

    def stop(self, timeout: float = 30.0) -> StopOutcome:
        """SIGTERM the process group, wait ``timeout``, then SIGKILL; remove the pid file.

        Only the process recorded in the pid file is touched, and only if it is
        the same process that was started (pid reuse is detected).
        """
        pid = self.running_pid()
        if pid is None:
            remove_pid_file(self.pid_file)
            self._popen = None
            return StopOutcome(self.name, None)
        _signal_group(pid, signal.SIGTERM)
        forced = not self._wait_gone(pid, timeout)
        if forced:
            _signal_group(pid, signal.SIGKILL)
            self._wait_gone(pid, 10.0)
        remove_pid_file(self.pid_file)
        self._popen = None
        return StopOutcome(self.name, pid, forced)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._popen is not None and self._popen.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._popen.wait(timeout=0.05)
                    return True
            elif not pid_alive(pid):
                return True
            else:
                time.sleep(0.05)
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
