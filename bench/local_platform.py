"""A throwaway Kafka broker + redis-server on free ports, for benchmarks.

Benchmarks measure against the real parts, like the integration tests, and tear
them down afterwards.  Set ``DRIFTLINE_BENCH_BOOTSTRAP`` / ``DRIFTLINE_BENCH_REDIS_PORT``
to measure against an already running platform instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from driftline.devtools.infra import KafkaNode, RedisNode, free_port

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 120


@dataclass(frozen=True)
class BenchPlatform:
    """Where the benchmark's broker and Redis listen."""

    bootstrap_servers: str
    redis_host: str
    redis_port: int


@contextlib.contextmanager
def local_platform(*, redis: bool = True) -> Iterator[BenchPlatform]:
    """Start (or reuse, see module doc) a broker and redis-server; stop what was started."""
    if os.environ.get("DRIFTLINE_BENCH_BOOTSTRAP"):
        yield BenchPlatform(
            os.environ["DRIFTLINE_BENCH_BOOTSTRAP"],
            "127.0.0.1",
            int(os.environ.get("DRIFTLINE_BENCH_REDIS_PORT", "6379")),
        )
        return
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        kafka = KafkaNode(Path(tmp) / "kafka", port=free_port(), controller_port=free_port())
        node = RedisNode(Path(tmp) / "redis", port=free_port()) if redis else None
        kafka.start()
        try:
            if node is not None:
                node.start()
            yield BenchPlatform(
                kafka.bootstrap_servers, "127.0.0.1", node.port if node is not None else 0
            )
        finally:
            if node is not None:
                node.stop()
            kafka.stop()


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, name: str) -> None:
    """Block until ``url`` answers 200 (and, for a ``/readyz``, says ready).

    Exits the benchmark with the log's path when the process dies or 120 s pass,
    so that a service that cannot start is reported, not waited on forever.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                body = r.read()
                if not url.endswith("/readyz") or json.loads(body)["ready"]:
                    return
        except (OSError, ValueError, KeyError):
            pass  # not listening yet, or not ready (503)
        time.sleep(0.3)
    raise SystemExit(f"{name} not ready in {READY_TIMEOUT_S} s; see {log}")


def wait_ready(admin_port: int, proc: subprocess.Popen[bytes], log: Path, name: str) -> None:
    """:func:`wait_http` on a Driftline service's ``/readyz``."""
    wait_http(f"http://127.0.0.1:{admin_port}/readyz", proc, log, name)


def serving_stack_env(
    *,
    bootstrap: str,
    redis_port: int,
    features: tuple[int, int],
    registry: tuple[int, int],
    serving: tuple[int, int],
    artifact_dir: Path,
    signing_key: str,
) -> dict[str, str]:
    """``DRIFTLINE_*`` variables for features + registry + serving on the given ports.

    Each pair is (gRPC port, admin port).  Variables of the calling environment that
    start with ``DRIFTLINE_`` are dropped, so nothing of another platform leaks in.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    featuresets = str(ROOT / "examples" / "featuresets")
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        DRIFTLINE_REDIS__HOST="127.0.0.1",
        DRIFTLINE_REDIS__PORT=str(redis_port),
        DRIFTLINE_FEATURES__GRPC_PORT=str(features[0]),
        DRIFTLINE_FEATURES__ADMIN__PORT=str(features[1]),
        DRIFTLINE_FEATURES__FEATURESETS_DIR=featuresets,
        DRIFTLINE_SERVING__GRPC_PORT=str(serving[0]),
        DRIFTLINE_SERVING__ADMIN__PORT=str(serving[1]),
        DRIFTLINE_SERVING__FEATURES_TARGET=f"127.0.0.1:{features[0]}",
        DRIFTLINE_SERVING__REGISTRY_TARGET=f"127.0.0.1:{registry[0]}",
        DRIFTLINE_SERVING__SIGNING_KEY=signing_key,
        DRIFTLINE_REGISTRY__GRPC_PORT=str(registry[0]),
        DRIFTLINE_REGISTRY__ADMIN__PORT=str(registry[1]),
        DRIFTLINE_REGISTRY__ARTIFACT_DIR=str(artifact_dir),
        DRIFTLINE_REGISTRY__FEATURESETS_DIR=featuresets,
        DRIFTLINE_REGISTRY__SIGNING_KEY=signing_key,
        DRIFTLINE_TELEMETRY__LOG_LEVEL="WARNING",
    )
    return env


def stop_processes(procs: list[subprocess.Popen[bytes]], grace_s: float = 30) -> None:
    """SIGTERM every process, then wait for each (SIGKILL after ``grace_s``)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
