"""A service whose Redis stays unreachable exits with status 3 and one line saying what to do.

Both services that use Redis (ingestion for its dedup window, features for the
online store) start against the harness's real Kafka broker and a port where
nothing listens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from driftline.devtools.infra import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("service", ["ingestion", "features"])
def test_an_unreachable_redis_ends_the_start_with_status_3_and_the_fix(
    kafka: Any, service: str
) -> None:
    nobody = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DRIFTLINE_REDIS__HOST="127.0.0.1",
        DRIFTLINE_REDIS__PORT=str(nobody),
        DRIFTLINE_REDIS__STARTUP_WAIT_S="1",
        DRIFTLINE_INGESTION__ADMIN__PORT=str(free_port()),
        DRIFTLINE_FEATURES__ADMIN__PORT=str(free_port()),
        DRIFTLINE_FEATURES__GRPC_PORT=str(free_port()),
        DRIFTLINE_FEATURES__FEATURESETS_DIR=str(ROOT / "examples" / "featuresets"),
        DRIFTLINE_INGESTION__FEATURESETS_DIR=str(ROOT / "examples" / "featuresets"),
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
    )
    done = subprocess.run(
        [sys.executable, "-m", f"driftline.{service}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 3, done.stderr[-2000:]
    line = f"driftline {service}: Redis at 127.0.0.1:{nobody} did not answer PING within 1s"
    assert line in done.stderr, done.stderr[-2000:]
    assert "driftline infra up" in done.stderr
