"""A throwaway Kafka broker + redis-server on free ports, for benchmarks.

Benchmarks measure against the real parts, like the integration tests, and tear
them down afterwards.  Set ``DRIFTLINE_BENCH_BOOTSTRAP`` / ``DRIFTLINE_BENCH_REDIS_PORT``
to measure against an already running platform instead (plaintext only: a secure
platform is always started here, with the credentials the bench wrote).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from driftline.devtools.infra import KafkaNode, RedisNode, free_port
from driftline.security import grpc_tls, http_tls
from driftline.settings import SecuritySettings

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 120


@dataclass(frozen=True)
class BenchPlatform:
    """Where the benchmark's broker and Redis listen."""

    bootstrap_servers: str
    redis_host: str
    redis_port: int
    redis: RedisNode | None = None
    """The redis-server started here (None when reused): its ``auth(identity)`` is how a
    client logs in to it in secure mode."""


@contextlib.contextmanager
def local_platform(
    *, redis: bool = True, secure_credentials: Path | None = None
) -> Iterator[BenchPlatform]:
    """Start (or reuse, see module doc) a broker and redis-server; stop what was started.

    ``secure_credentials``: start both in secure mode with that credentials directory
    (what ``pki.write_credentials`` wrote): Kafka SASL_SSL with the access table's ACLs
    (applied once it answers), Redis TLS only with its ACL users.
    """
    if os.environ.get("DRIFTLINE_BENCH_BOOTSTRAP") and secure_credentials is None:
        yield BenchPlatform(
            os.environ["DRIFTLINE_BENCH_BOOTSTRAP"],
            "127.0.0.1",
            int(os.environ.get("DRIFTLINE_BENCH_REDIS_PORT", "6379")),
        )
        return
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        kafka = KafkaNode(
            Path(tmp) / "kafka",
            port=free_port(),
            controller_port=free_port(),
            secure_credentials=secure_credentials,
        )
        node = (
            RedisNode(Path(tmp) / "redis", port=free_port(), secure_credentials=secure_credentials)
            if redis
            else None
        )
        kafka.start()
        try:
            if node is not None:
                node.start()
            yield BenchPlatform(
                kafka.bootstrap_servers, "127.0.0.1", node.port if node is not None else 0, node
            )
        finally:
            if node is not None:
                node.stop()
            kafka.stop()


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    name: str,
    security: SecuritySettings | None = None,
) -> None:
    """Block until ``url`` answers 200 (and, for a ``/readyz``, says ready).

    Exits the benchmark with the log's path when the process dies or 120 s pass,
    so that a service that cannot start is reported, not waited on forever.
    ``security``: an ``https://`` URL of a secure-mode service is read as ``admin``.
    """
    context = http_tls.client_context(security, "admin")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                body = r.read()
                if not url.endswith("/readyz") or json.loads(body)["ready"]:
                    return
        except (OSError, ValueError, KeyError):
            pass  # not listening yet, or not ready (503)
        time.sleep(0.3)
    raise SystemExit(f"{name} not ready in {READY_TIMEOUT_S} s; see {log}")


def wait_ready(
    admin_port: int,
    proc: subprocess.Popen[bytes],
    log: Path,
    name: str,
    security: SecuritySettings | None = None,
) -> None:
    """:func:`wait_http` on a Driftline service's ``/readyz`` (HTTPS in secure mode)."""
    url = http_tls.url("127.0.0.1", admin_port, security, "/readyz")
    wait_http(url, proc, log, name, security)


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


@dataclass(frozen=True)
class Caller:
    """Who a benchmark's gRPC client is: plaintext (``security`` None or off) or mutual TLS
    with ``identity``'s certificate, and the metadata sent with every call (a public
    caller's API key), so one load generator measures either platform."""

    security: SecuritySettings | None
    identity: str = "admin"
    metadata: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Sent with every call; may hold an API key, so never in a repr."""

    def channel(self, target: str, options: Any = None) -> grpc.aio.Channel:
        """A channel to ``target`` built by the platform's one gRPC factory."""
        return grpc_tls.channel(target, self.security, self.identity, options=options)

    @property
    def call_metadata(self) -> tuple[tuple[str, str], ...] | None:
        """What to pass as a call's ``metadata`` (None: none, as a plain call sends)."""
        return self.metadata or None
