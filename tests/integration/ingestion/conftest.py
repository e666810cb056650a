from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from driftline.devtools.infra import free_port

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Ingestion:
    proc: subprocess.Popen[bytes]
    admin_port: int
    env: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def start_ingestion(env: dict[str, str], log: Path, timeout: float = 60) -> Ingestion:
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftline.ingestion"], env=env, stdout=out, stderr=out, cwd=ROOT
    )
    port = int(env["DRIFTLINE_INGESTION__ADMIN__PORT"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ingestion exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return Ingestion(proc, port, env, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"ingestion not ready in {timeout}s:\n{log.read_text()}")


@pytest.fixture
def ingestion_env(kafka: object, redis_server: object, tmp_path: Path) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,  # type: ignore[attr-defined]
        DRIFTLINE_REDIS__HOST=redis_server.host,  # type: ignore[attr-defined]
        DRIFTLINE_REDIS__PORT=str(redis_server.port),  # type: ignore[attr-defined]
        DRIFTLINE_INGESTION__ADMIN__PORT=str(free_port()),
        DRIFTLINE_INGESTION__FEATURESETS_DIR=str(ROOT / "examples" / "featuresets"),
        DRIFTLINE_INGESTION__CONSUMER_GROUP=f"ingestion-{run}",
        DRIFTLINE_INGESTION__INSTANCE_ID=run,
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
    )
    return env


@pytest.fixture
def ingestion_factory(
    ingestion_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., Ingestion]]:
    started: list[Ingestion] = []

    def factory(**extra: str) -> Ingestion:
        svc = start_ingestion({**ingestion_env, **extra}, tmp_path / "ingestion.log")
        started.append(svc)
        return svc

    yield factory
    for svc in started:
        if svc.proc.poll() is None:
            svc.proc.terminate()
            try:
                svc.proc.wait(15)
            except subprocess.TimeoutExpired:
                svc.proc.kill()
