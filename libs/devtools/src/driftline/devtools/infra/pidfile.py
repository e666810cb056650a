"""Pid files that survive pid reuse: the pid plus the process's kernel start time.

A pid file holds the pid on its first line (so ``kill $(head -1 kafka.pid)``
works) followed by ``key=value`` lines::

    4242
    start_ticks=1234567
    command=java … kafka.Kafka …/server.properties

A recorded process "matches" when it is alive, not a zombie, and (where
``/proc`` exists) started at the recorded time, so a recycled pid is never
mistaken for ours.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PidRecord",
    "parse_pid_file",
    "pid_alive",
    "process_start_ticks",
    "read_pid_file",
    "remove_pid_file",
    "running_pid",
    "write_pid_file",
]


@dataclass(frozen=True)
class PidRecord:
    """What a pid file says about the process it names."""

    pid: int
    start_ticks: int | None = None
    """Kernel start time of the process (``/proc/<pid>/stat`` field 22), if known."""
    extra: dict[str, str] = field(default_factory=dict)
    """Other ``key=value`` lines (``command``…), kept for humans."""

    def render(self) -> str:
        """The pid file text for this record."""
        lines = [str(self.pid)]
        if self.start_ticks is not None:
            lines.append(f"start_ticks={self.start_ticks}")
        lines.extend(f"{k}={v.replace(chr(10), ' ')}" for k, v in self.extra.items())
        return "\n".join(lines) + "\n"


def parse_pid_file(text: str) -> PidRecord | None:
    """Parse pid file text; ``None`` when it does not start with a positive pid.

    >>> parse_pid_file("42\\nstart_ticks=7\\n")
    PidRecord(pid=42, start_ticks=7, extra={})
    >>> parse_pid_file("garbage") is None
    True
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        pid = int(lines[0])
    except ValueError:
        return None
    if pid <= 0:
        return None
    start_ticks: int | None = None
    extra: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "start_ticks":
            try:
                start_ticks = int(value)
            except ValueError:
                start_ticks = None
        else:
            extra[key] = value
    return PidRecord(pid=pid, start_ticks=start_ticks, extra=extra)


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in ``path``; ``None`` if it is missing or unreadable."""
    try:
        return parse_pid_file(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None


def write_pid_file(path: Path, record: PidRecord) -> None:
    """Write ``record`` to ``path`` atomically (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(record.render(), encoding="utf-8")
    tmp.replace(path)


def remove_pid_file(path: Path) -> None:
    """Delete ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _proc_stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    _, _, rest = raw.rpartition(")")
    return rest.split()


def process_start_ticks(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks since boot; ``None`` without ``/proc``."""
    fields = _proc_stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3 (state)
    except ValueError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a zombie our own child is reaped)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat_fields(pid)
    return not (fields is not None and fields and fields[0] in ("Z", "X"))


def running_pid(path: Path) -> int | None:
    """The pid recorded in ``path`` if that very process is still running, else ``None``."""
    record = read_pid_file(path)
    if record is None or not pid_alive(record.pid):
        return None
    if record.start_ticks is not None:
        now = process_start_ticks(record.pid)
        if now is not None and now != record.start_ticks:
            return None
    return record.pid
