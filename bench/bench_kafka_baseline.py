"""Baseline: raw aiokafka produce and consume rate of 200-byte JSON values.

Every other throughput figure in the report is a ratio to this one, measured in
the same run on the same broker (the machine is shared and noisy).

    uv run python bench/bench_kafka_baseline.py [--messages 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

OUT = Path(__file__).parent / "out"


def payload(i: int) -> bytes:
    """A 200-byte JSON value."""
    base = {"event_id": f"e-{i:09d}", "entity_id": f"c-{i % 1000:05d}", "v": 0.5, "pad": ""}
    raw = json.dumps(base, separators=(",", ":")).encode()
    base["pad"] = "x" * (200 - len(raw))
    out = json.dumps(base, separators=(",", ":")).encode()
    assert len(out) == 200
    return out


async def measure(bootstrap: str, messages: int, partitions: int = 6) -> dict[str, Any]:
    """Produce ``messages`` values with acks=all, then consume them all; rates in msg/s."""
    topic = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, partitions, 1)])
    await admin.close()
    values = [payload(i) for i in range(messages)]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    t0 = time.perf_counter()
    futures = []
    for i, v in enumerate(values):
        futures.append(await producer.send(topic, v, key=f"c-{i % 1000}".encode()))
    await producer.flush()
    for f in futures:
        await f
    produce_s = time.perf_counter() - t0
    await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    t0 = time.perf_counter()
    seen = 0
    while seen < messages:
        batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        seen += sum(len(r) for r in batch.values())
    consume_s = time.perf_counter() - t0
    await consumer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.delete_topics([topic])
    await admin.close()
    return {
        "messages": messages,
        "value_bytes": 200,
        "produce_msgs_per_s": messages / produce_s,
        "consume_msgs_per_s": messages / consume_s,
        "produce_consume_msgs_per_s": messages / (produce_s + consume_s),
    }


def run(bootstrap: str, messages: int) -> dict[str, Any]:
    """Measure and return the figures."""
    return asyncio.run(measure(bootstrap, messages))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    from local_platform import local_platform

    with local_platform(redis=False) as p:
        result = run(p.bootstrap_servers, args.messages)
    OUT.mkdir(exist_ok=True)
    (OUT / "kafka_baseline.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
