"""``driftline up`` in the foreground, then ``driftline down`` from another terminal.

Both run as subprocesses (``python -m driftline.cli``) on a state directory and
ports of their own: ``up`` starts a real Kafka, a real redis-server and the six
services, three of them as two replicas (``--replicas``).  Every log already holds
lines of an "earlier run", so a report that shows them is caught.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from support.platform import metric_value

from driftline.cli.supervisor import REPLICA_PORT_STEP, SERVICE_NAMES
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


REPLICATED = ("features", "training", "serving")
"""The services this test runs as two replicas."""


async def _group_members(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_consumer_groups([group])
        return len(described.groups[0][5])  # (error, id, state, protocol_type, protocol, members)
    finally:
        await admin.close()


def _check_replicas(env: dict[str, str], output: Callable[[], str]) -> None:
    """The second replicas run beside the first, each doing its share."""
    for name in REPLICATED:
        assert f"{name}-1: healthy" in output(), output()
    # serving reaches both features replicas (pick_first moves on when one stops answering)
    port = int(env["DRIFTLINE_FEATURES__GRPC_PORT"])
    both = f"ipv4:127.0.0.1:{port},127.0.0.1:{port + REPLICA_PORT_STEP}"
    assert f"DRIFTLINE_SERVING__FEATURES_TARGET={both}" in output(), output()
    admin = {n: int(env[f"DRIFTLINE_{n.upper()}__ADMIN__PORT"]) for n in REPLICATED}
    serving = int(env["DRIFTLINE_SERVING__ADMIN__PORT"]) + REPLICA_PORT_STEP
    assert httpx.get(f"http://127.0.0.1:{serving}/healthz", timeout=5).status_code == 200
    # one active trainer, one standby
    trainers = [f"http://127.0.0.1:{admin['training'] + i * REPLICA_PORT_STEP}/metrics"
                for i in (0, 1)]  # fmt: skip
    _wait_for(
        lambda: (
            sorted(metric_value(u, "driftline_training_active") or 0 for u in trainers) == [0, 1]
        ),
        60,
        "one active trainer and one standby",
    )
    # both features workers share driftline.events.valid in one group
    bootstrap = env["DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"]
    _wait_for(
        lambda: asyncio.run(_group_members(bootstrap, "driftline-features")) == 2,
        60,
        "two members of the features group",
    )


def test_foreground_up_exits_when_down_stops_what_it_started(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = isolated_platform_env(state)
    logs = state / "logs"
    logs.mkdir(parents=True)
    replicas = [f"{name}-1" for name in REPLICATED]
    for name in (*SERVICE_NAMES, *replicas, "kafka", "redis"):
        (logs / f"{name}.log").write_text("".join(f"{STALE} ({name} {i})\n" for i in range(40)))

    out_file, err_file = tmp_path / "up.out", tmp_path / "up.err"

    def output() -> str:
        return out_file.read_text(errors="replace") + err_file.read_text(errors="replace")

    with out_file.open("w") as out, err_file.open("w") as err:
        up = subprocess.Popen(
            _cli("up", "--timeout", "180", "--replicas", ",".join(f"{n}=2" for n in REPLICATED)),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
        )
    down: subprocess.CompletedProcess[str] | None = None
    try:
        _wait_for(
            lambda: RUNNING in output() or up.poll() is not None, 600, "`driftline up` running"
        )
        assert up.poll() is None, f"`driftline up` exited with {up.returncode}:\n{output()}"
        assert "healthy" in output() and "exited" not in output(), output()
        _check_replicas(env, output)

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
    for name in (*SERVICE_NAMES, *replicas, "kafka", "redis"):
        assert read_pid_file(state / "run" / f"{name}.pid") is None, name
