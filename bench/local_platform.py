"""A throwaway Kafka broker + redis-server on free ports, for benchmarks.

Benchmarks measure against the real parts, like the integration tests, and tear
them down afterwards.  Set ``DRIFTLINE_BENCH_BOOTSTRAP`` / ``DRIFTLINE_BENCH_REDIS_PORT``
to measure against an already running platform instead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from driftline.devtools.infra import KafkaNode, RedisNode, free_port


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
