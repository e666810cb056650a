"""Producing with kcat and collecting committed records, for integration tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from river.datasets import synth

from driftline.contracts.topics import Topic


def kcat_produce(bootstrap: str, topic: Topic, records: list[tuple[str, bytes]]) -> None:
    """Produce ``key|value`` lines with kcat (values must not contain newlines)."""
    lines = b"".join(k.encode() + b"|" + v + b"\n" for k, v in records)
    subprocess.run(
        [
            "kcat",
            "-P",
            "-b",
            bootstrap,
            "-t",
            topic.name,
            "-K",
            "|",
            "-X",
            "message.max.bytes=2000000",
        ],
        input=lines,
        check=True,
        timeout=60,
    )


async def collect(
    bootstrap: str, topics: list[Topic], keep: Callable[[Any], bool], want: int, timeout: float = 60
) -> list[Any]:
    """Committed records of ``topics`` that ``keep`` selects, until ``want`` or the timeout."""
    consumer = AIOKafkaConsumer(
        *(t.name for t in topics),
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < want:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                out.extend(r for r in recs if keep(r))
        # Linger a little: anything beyond ``want`` would be a double write.
        end = time.monotonic() + 2
        while time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=300)
            for recs in batch.values():
                out.extend(r for r in recs if keep(r))
    finally:
        await consumer.stop()
    return out


def agrawal_events(run: str, n: int, *, seed: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{run}-e{i}",
            "entity_id": f"{run}-c{i % 25}",
            "timestamp": 1_795_449_600_000 + i,
            "featureset": "loans",
            "features": x,
        }
        for i, (x, _) in enumerate(synth.Agrawal(seed=seed).take(n))
    ]
