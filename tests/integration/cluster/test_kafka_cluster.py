"""The local three-node Kafka cluster (``driftline infra up --brokers 3``) keeps every write
when the broker leading the most partitions is SIGKILLed.

One cluster for the module, three real KRaft nodes (each a broker and a controller voter)
on free ports, with the platform's topics provisioned as ``--brokers 3`` does (replication
factor 3, ``min.insync.replicas=2``). kcat, a client outside the code under test, sees three
replicas in sync for every partition. An idempotent ``acks=all`` producer
(:func:`driftline.kafkaio.make_producer`) writes before and after the kill; every write is
acknowledged (two replicas remain in sync, the quorum keeps two of three voters) and every
record is read back exactly once. The time from the kill to the first acknowledged write
after it is printed (no assertion on it: it is the controller's broker session timeout
plus a leader election, and two busy cores stretch it).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from driftline.contracts.topics import ALL_TOPICS, EVENTS_VALID
from driftline.devtools.infra import KafkaCluster, free_kafka_cluster_ports
from driftline.kafkaio import make_consumer, make_producer, provision_topics
from driftline.kafkaio.clients import read_from_start
from driftline.settings import InfraSettings, KafkaSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
BEFORE = 300
"""Records written while all three brokers run."""
AFTER = 300
"""Records written from the moment of the kill on, one every :data:`AFTER_EVERY_S`."""
AFTER_EVERY_S = 0.02


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    infra = InfraSettings()  # honours DRIFTLINE_INFRA__JAR_CACHE / __KAFKA_VERSION
    ports, controller_ports = free_kafka_cluster_ports()
    nodes = KafkaCluster(
        tmp_path_factory.mktemp("kafka-cluster"),
        ports=ports,
        controller_ports=controller_ports,
        kafka_version=infra.kafka_version,
        jar_cache=infra.jar_cache,
        infra_dir=ROOT / "infra",
    )
    nodes.start(timeout_s=120.0)
    try:
        yield nodes
    finally:
        nodes.stop(timeout_s=15.0)


def _settings(cluster: KafkaCluster) -> KafkaSettings:
    # What `--brokers 3` gives every process: all three nodes, three replicas per partition.
    return KafkaSettings(bootstrap_servers=cluster.bootstrap_servers, default_replication_factor=3)


def _metadata(cluster: KafkaCluster, topic: str | None = None) -> dict[str, Any]:
    """``kcat -L -J`` from one live node: brokers, and each partition's leader, replicas, ISR."""
    live = next(n for n in cluster.nodes if n.running_pid() is not None)
    argv = ["kcat", "-b", live.bootstrap_servers, "-L", "-J", "-m", "10"]
    done = subprocess.run(
        [*argv, *(["-t", topic] if topic else [])],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(json.loads(done.stdout))


def _partitions(meta: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    (found,) = [t for t in meta["topics"] if t["topic"] == topic]
    return list(found["partitions"])


def _ids(entries: list[dict[str, Any]]) -> set[int]:
    return {int(e["id"]) for e in entries}


def _wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s:g}s")
        time.sleep(0.5)


@pytest.fixture(scope="module")
async def provisioned(cluster: KafkaCluster) -> KafkaCluster:
    created = await provision_topics(_settings(cluster))
    assert sorted(created) == sorted(t.name for t in ALL_TOPICS)
    return cluster


async def test_topics_have_three_replicas_all_in_sync(provisioned: KafkaCluster) -> None:
    cluster = provisioned
    assert cluster.live_brokers() == 3

    def whole() -> list[dict[str, Any]] | None:
        parts = _partitions(_metadata(cluster, EVENTS_VALID.name), EVENTS_VALID.name)
        in_sync = all(len(_ids(p["isrs"])) == 3 for p in parts)
        return parts if in_sync else None

    parts = _wait_for(whole, 20.0, "every partition of driftline.events.valid with ISR 3")
    assert len(parts) == EVENTS_VALID.partitions
    for p in parts:
        assert _ids(p["replicas"]) == {1, 2, 3}, p
        assert _ids(p["isrs"]) == {1, 2, 3}, p
    # Leadership is spread over the brokers, not piled on one.
    assert len({p["leader"] for p in parts}) > 1
    # Three replicas make min.insync.replicas 2 on the topic (one broker may be lost).
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, EVENTS_VALID.name)]
        )
    finally:
        await admin.close()
    configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
    assert configs["min.insync.replicas"] == "2"


async def _send_all(
    producer: AIOKafkaProducer, values: list[str], every_s: float = 0.0
) -> list[asyncio.Future[Any]]:
    futures = []
    for value in values:
        futures.append(
            await producer.send(EVENTS_VALID.name, value=value.encode(), key=value.encode())
        )
        if every_s:
            await asyncio.sleep(every_s)
    return futures


async def test_killing_the_busiest_leader_loses_no_acknowledged_write(
    provisioned: KafkaCluster,
) -> None:
    cluster = provisioned
    settings = _settings(cluster)
    run = uuid.uuid4().hex[:8]
    before = [f"{run}-before-{i}" for i in range(BEFORE)]
    after = [f"{run}-after-{i}" for i in range(AFTER)]

    # Long enough for the producer's own retries to ride out the fail-over: a write is
    # never sent twice by this test, so "exactly once" is the producer's doing.
    producer = make_producer(settings, "cluster-test", request_timeout_ms=60_000)
    await producer.start()
    try:
        await asyncio.gather(*await _send_all(producer, before))

        meta = _metadata(cluster)
        leaders = Counter(
            int(p["leader"])
            for t in meta["topics"]
            for p in t["partitions"]
            if not t["topic"].startswith("__")
        )
        victim_id, led = leaders.most_common(1)[0]
        victim = cluster.node(victim_id)
        print(f"\nleaders per broker: {dict(leaders)}; SIGKILL broker {victim_id} ({led} led)")
        killed_at = time.monotonic()
        victim.process.signal(signal.SIGKILL)

        acked: list[float] = []
        futures = await _send_all(producer, after, AFTER_EVERY_S)
        for fut in futures:
            fut.add_done_callback(lambda f: f.exception() or acked.append(time.monotonic()))
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert not failed, f"{len(failed)} acks=all writes failed after the kill: {failed[:3]}"
        recovery = min(acked) - killed_at
        print(
            f"kill -> first acknowledged write: {recovery:.1f}s; "
            f"kill -> all {AFTER} acknowledged: {max(acked) - killed_at:.1f}s"
        )
    finally:
        await producer.stop()

    # The survivors lead every partition, with the two of them in sync.
    def moved() -> bool:
        parts = _partitions(_metadata(cluster, EVENTS_VALID.name), EVENTS_VALID.name)
        return all(
            int(p["leader"]) != victim_id and _ids(p["isrs"]) == {1, 2, 3} - {victim_id}
            for p in parts
        )

    _wait_for(moved, 30.0, f"leaders and ISRs of driftline.events.valid without {victim_id}")
    assert cluster.live_brokers() == 2

    # Every record written, before and after the kill, is there exactly once.
    consumer = make_consumer(settings, "cluster-check", group_id=None)
    await consumer.start()
    try:
        ends = await read_from_start(consumer, EVENTS_VALID)
        seen: Counter[str] = Counter()
        deadline = time.monotonic() + 30.0
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            assert time.monotonic() < deadline, "could not read the topic to its end"
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                seen.update(r.value.decode() for r in records if r.value is not None)
    finally:
        await consumer.stop()
    ours = {v: n for v, n in seen.items() if v.startswith(f"{run}-")}
    assert sorted(ours) == sorted(before + after)
    assert set(ours.values()) == {1}, {v: n for v, n in ours.items() if n != 1}
