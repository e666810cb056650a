"""A foreground ``driftline up`` watching what it started, with real (tiny) processes.

``driftline down`` stops processes through their pid files from another process;
the foreground ``up`` must tell that from a crash, exit once all it started is
stopped, and show only the log lines of the run it started.
"""

from __future__ import annotations

import io
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from driftline.cli import service_commands
from driftline.devtools.infra import ManagedProcess, tail_lines

STALE = "STALE: a line an earlier run of this process wrote"


def _process(tmp_path: Path, name: str) -> ManagedProcess:
    return ManagedProcess(
        name, pid_file=tmp_path / "run" / f"{name}.pid", log_file=tmp_path / "logs" / f"{name}.log"
    )


def _with_stale_log(proc: ManagedProcess) -> ManagedProcess:
    proc.log_file.parent.mkdir(parents=True, exist_ok=True)
    proc.log_file.write_text("".join(f"{STALE} ({i})\n" for i in range(50)))
    return proc


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _wait_ended(proc: ManagedProcess, timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (code := proc.exit_code()) is None:
        assert time.monotonic() < deadline, f"{proc.name} did not end within {timeout_s}s"
        time.sleep(0.05)
    return code


def test_log_tail_shows_only_the_lines_of_the_process_it_spawned(tmp_path: Path) -> None:
    proc = _with_stale_log(_process(tmp_path, "short"))
    proc.spawn(_python("print('this run', flush=True); raise SystemExit(3)"))
    assert _wait_ended(proc) == 3
    tail = proc.log_tail(30)
    assert "this run" in tail
    assert "driftline: starting short" in tail
    assert "STALE" not in tail
    # the whole file still holds the earlier run, and a file cut below the start is read whole
    assert "STALE" in tail_lines(proc.log_file, 100)
    assert tail_lines(proc.log_file, 2, start=10**9).splitlines()[-1] == "this run"


def test_was_stopped_tells_a_stop_through_the_pid_file_from_a_crash(tmp_path: Path) -> None:
    crashed = _process(tmp_path, "crashed")
    crashed.spawn(_python("raise SystemExit(1)"))
    assert _wait_ended(crashed) == 1
    assert not crashed.was_stopped()  # it left its pid file behind

    stopped = _process(tmp_path, "stopped")
    stopped.spawn(_python("import time; time.sleep(60)"))
    assert not stopped.was_stopped()  # still running
    # what `driftline down` does, from its own ManagedProcess on the same files
    outcome = _process(tmp_path, "stopped").stop(timeout=10.0)
    assert outcome.pid is not None
    assert stopped.exit_code() is not None
    assert stopped.was_stopped()


def test_foreground_up_returns_once_everything_it_started_is_stopped_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(service_commands, "console", Console(file=out, width=300))
    monkeypatch.setattr(service_commands, "err_console", Console(file=err, width=300))
    monkeypatch.setattr(service_commands, "CRASH_GRACE_S", 0.5)
    steady = _with_stale_log(_process(tmp_path, "steady"))
    crashing = _with_stale_log(_process(tmp_path, "crashing"))
    steady.spawn(_python("import time; time.sleep(60)"))
    crashing.spawn(_python("print('fresh line', flush=True); raise SystemExit(4)"))

    def down_later() -> None:  # `driftline down` in another terminal, once the crash is shown
        deadline = time.monotonic() + 20.0
        while "crashing exited" not in err.getvalue() and time.monotonic() < deadline:
            time.sleep(0.1)
        for name in ("steady", "crashing"):
            _process(tmp_path, name).stop(timeout=10.0)

    helper = threading.Thread(target=down_later)
    # A SIGTERM ends the wait too: the bound of this test should the wait never return.
    bound = threading.Timer(40.0, signal.raise_signal, (signal.SIGTERM,))
    started = time.monotonic()
    helper.start()
    bound.start()
    try:
        everything_stopped = service_commands._wait_for_signal([steady, crashing])
    finally:
        bound.cancel()
        helper.join()
    assert everything_stopped, "returned on the SIGTERM bound, not once both were stopped"
    assert time.monotonic() - started < 30.0
    # the crash was reported once, with the lines of this run only; the stop is no crash
    report = err.getvalue()
    assert report.count("crashing exited with status 4") == 1, report
    assert "fresh line" in report
    assert "STALE" not in report
    assert "steady" not in report


def test_foreground_up_keeps_waiting_while_something_it_started_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_commands, "console", Console(file=io.StringIO()))
    monkeypatch.setattr(service_commands, "err_console", Console(file=io.StringIO()))
    monkeypatch.setattr(service_commands, "CRASH_GRACE_S", 0.2)
    running = _process(tmp_path, "running")
    stopped = _process(tmp_path, "stopped")
    running.spawn(_python("import time; time.sleep(60)"))
    stopped.spawn(_python("import time; time.sleep(60)"))
    _process(tmp_path, "stopped").stop(timeout=10.0)
    # only Ctrl-C / SIGTERM ends the wait now: one of the two still runs
    threading.Timer(2.0, signal.raise_signal, (signal.SIGINT,)).start()
    try:
        assert service_commands._wait_for_signal([running, stopped]) is False
    finally:
        running.stop(timeout=10.0)
