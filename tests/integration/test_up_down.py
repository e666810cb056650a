"""``driftline up`` in the foreground, then ``driftline down`` from another terminal.

Both run as subprocesses (``python -m driftline.cli``) on a state directory and
ports of their own: ``up`` starts a real Kafka, a real redis-server and the six
services.  Every log already holds lines of an "earlier run", so a report that
shows them is caught.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from driftline.cli.supervisor import SERVICE_NAMES
from driftline.devtools.demo_env import isolated_platform_env
from driftline.devtools.infra import read_pid_file

ROOT = Path(__file__).resolve().parents[2]
STALE = "STALE: a line an earlier run wrote"
RUNNING = "running; Ctrl-C stops everything"
STOPPED = "everything this command started was stopped (`driftline down`); exiting"

pytestmark = pytest.mark.timeout(900)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "driftline.cli", *args]


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g}s")
        time.sleep(0.5)


def test_foreground_up_exits_when_down_stops_what_it_started(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = isolated_platform_env(state)
    logs = state / "logs"
    logs.mkdir(parents=True)
    for name in (*SERVICE_NAMES, "kafka", "redis"):
        (logs / f"{name}.log").write_text("".join(f"{STALE} ({name} {i})\n" for i in range(40)))

    out_file, err_file = tmp_path / "up.out", tmp_path / "up.err"

    def output() -> str:
        return out_file.read_text(errors="replace") + err_file.read_text(errors="replace")

    with out_file.open("w") as out, err_file.open("w") as err:
        up = subprocess.Popen(
            _cli("up", "--timeout", "180"), cwd=ROOT, env=env, stdout=out, stderr=err
        )
    down: subprocess.CompletedProcess[str] | None = None
    try:
        _wait_for(
            lambda: RUNNING in output() or up.poll() is not None, 600, "`driftline up` running"
        )
        assert up.poll() is None, f"`driftline up` exited with {up.returncode}:\n{output()}"
        assert "healthy" in output() and "exited" not in output(), output()

        # a service that dies on its own is reported, with the lines of this run only
        record = read_pid_file(state / "run" / "monitoring.pid")
        assert record is not None, output()
        os.kill(record.pid, signal.SIGKILL)
        _wait_for(lambda: "monitoring exited with status" in output(), 30, "the crash report")

        down = subprocess.run(
            _cli("down", "--timeout", "60"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
        stopped_at = time.monotonic()
        try:
            code = up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`driftline up` still runs 30s after `driftline down`:\n{output()}")
        assert code == 0, output()
        assert time.monotonic() - stopped_at < 30
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)  # it stops what it started
            up.wait(timeout=300)
        if down is None:
            subprocess.run(_cli("down"), cwd=ROOT, env=env, timeout=300, check=False)

    text = output()
    assert text.count(STOPPED) == 1, text
    assert out_file.read_text().strip().splitlines()[-1] == STOPPED, text
    assert "STALE" not in text, text
    # only the killed service is reported as exited, and with its own start's lines
    assert re.findall(r"^(\w+) exited with status", text, flags=re.MULTILINE) == ["monitoring"]
    assert "monitoring exited with status -9" in text
    assert "driftline: starting monitoring" in text
    assert "shutting down" not in text  # `down` stopped everything; `up` stopped nothing
    for name in (*SERVICE_NAMES, "kafka", "redis"):
        assert read_pid_file(state / "run" / f"{name}.pid") is None, name
