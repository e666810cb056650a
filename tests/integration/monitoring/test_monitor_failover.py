"""Two ``python -m driftline.monitoring`` replicas: one active monitor, one standby.

The active one holds the partition of the election group; its transactional producer (one
transactional id for every replica) fences the previous one's at the broker.  Paused, it is
replaced by the standby; resumed, it exits by itself.  The new active monitor reads the
data from the group's committed offsets and asks for retraining exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.platform import metric_value

from driftline.contracts.messages import RetrainRequest
from driftline.contracts.topics import RETRAIN
from driftline.devtools.infra import free_port
from driftline.kafkaio import provision_topics
from driftline.settings import KafkaSettings

from .test_monitoring_service import (
    caught_up,
    launch_monitor,
    produce_story,
    read_all,
    stop_monitor,
    wait_ready,
)

pytestmark = pytest.mark.integration

SESSION_S = "6"


def _active(port: int) -> float | None:
    return metric_value(f"http://127.0.0.1:{port}/metrics", "driftline_monitoring_active")


def _wait(condition: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


async def test_a_standby_monitor_takes_over_and_the_paused_one_steps_down(
    kafka: Any, tmp_path: Path
) -> None:
    bootstrap = kafka.bootstrap_servers
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    await provision_topics(settings)
    group = f"monitoring-{uuid.uuid4().hex[:8]}"
    env = {"DRIFTLINE_MONITORING__SESSION_TIMEOUT_S": SESSION_S}
    ports = {"a": free_port(), "b": free_port()}
    logs = {name: tmp_path / f"monitoring-{name}.log" for name in ports}
    procs = {}
    try:
        for name in ("a", "b"):
            procs[name] = launch_monitor(
                bootstrap, logs[name], port=ports[name], group=group, instance=name,
                extra_env=env,
            )  # fmt: skip
        for name in ("a", "b"):
            wait_ready(procs[name], ports[name], logs[name])
        _wait(
            lambda: sorted(_active(p) or 0 for p in ports.values()) == [0, 1],
            "one active monitor and one standby",
        )
        assert all(proc.poll() is None for proc in procs.values()), "a monitor exited"

        first = next(n for n, p in ports.items() if _active(p) == 1)
        second = "b" if first == "a" else "a"

        os.kill(procs[first].pid, signal.SIGSTOP)
        try:
            _wait(lambda: _active(ports[second]) == 1, "the standby to take over")
        finally:
            os.kill(procs[first].pid, signal.SIGCONT)
        _wait(lambda: procs[first].poll() is not None, "the paused monitor to exit", 60)
        text = logs[first].read_text(errors="replace")
        assert "is no longer the active monitor" in text, text[-3000:]
        assert "active monitor: writing under" in logs[second].read_text()

        # The new active monitor does the work: one drift, one retraining request.
        model = f"loans-{uuid.uuid4().hex[:6]}"
        await produce_story(bootstrap, model, f"fs-{model}")
        await caught_up(bootstrap, group)
        await asyncio.sleep(1.0)  # the last publish interval
        requests: list[RetrainRequest] = await read_all(bootstrap, RETRAIN, model)
        assert len(requests) == 1, requests
        assert procs[second].poll() is None
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                stop_monitor(proc)
