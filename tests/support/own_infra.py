"""A broker and a redis-server of a test module's own, for tests that run the whole
platform and must see nothing but their own records (the demo, the batch loop), and
reading a topic back whole."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from aiokafka import TopicPartition

from driftline.contracts.topics import Topic
from driftline.devtools.infra import KafkaNode, RedisNode, free_port, free_ports
from driftline.kafkaio import make_consumer
from driftline.settings import KafkaSettings
from driftline.settings.models import InfraSettings

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def own_kafka_node(state: Path) -> Iterator[KafkaNode]:
    """A real broker with its state in ``state``, stopped on exit."""
    infra = InfraSettings()
    port, controller = free_ports(2)
    node = KafkaNode(
        state,
        port=port,
        controller_port=controller,
        kafka_version=infra.kafka_version,
        jar_cache=infra.jar_cache,
        heap="512m",
        infra_dir=ROOT / "infra",
    )
    node.start(timeout_s=120.0)
    try:
        yield node
    finally:
        node.stop(timeout_s=20.0)


@contextlib.contextmanager
def own_redis_node(state: Path) -> Iterator[RedisNode]:
    """A real redis-server with its state in ``state``, stopped on exit."""
    node = RedisNode(state, port=free_port(), infra_dir=ROOT / "infra")
    node.start(timeout_s=30.0)
    try:
        yield node
    finally:
        node.stop(timeout_s=10.0)


async def read_topic(bootstrap: str, topic: Topic, client: str) -> list[bytes]:
    """Every value on ``topic`` from its beginning up to its end now (all partitions)."""
    consumer = make_consumer(KafkaSettings(bootstrap_servers=bootstrap), client, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        values: list[bytes] = []
        while any([await consumer.position(tp) < ends[tp] for tp in parts]):
            batch = await consumer.getmany(*parts, timeout_ms=1000)
            for records in batch.values():
                values.extend(r.value for r in records if r.value is not None)
        return values
    finally:
        await consumer.stop()
