"""A broker started on a busy machine takes ingestion's ``acks=all`` writes from the start.

A fresh machine's first demo once saw its single broker answer NOT_ENOUGH_REPLICAS
to ingestion's transactional ``acks=all`` writes for two minutes while the services
started on two busy cores. With one broker and ``min.insync.replicas=1`` the
in-sync-replica check cannot fail; the one way such a broker answers it is the
transaction verification of KIP-890, which reports the transaction coordinator's
retriable errors (still loading, not available, busy) to an older client such as
aiokafka as NOT_ENOUGH_REPLICAS. So the broker now creates a one-partition
``__transaction_state``, and the platform waits until its transaction and group
coordinators answer before anything else starts (``KafkaNode.check_coordinators``).

Here every core is kept busy before the broker starts, and stays busy: a new broker,
redis-server and the real ingestion service start under that load, and kcat
(``acks=all``) feeds raw events from the first moment. Every event must come out on
``driftline.events.valid`` exactly once, kcat must report no failed delivery, and
neither must ingestion's producer have been answered NOT_ENOUGH_REPLICAS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.own_infra import own_kafka_node, own_redis_node
from support.records import agrawal_events, collect

from driftline.contracts.topics import EVENTS, EVENTS_VALID
from driftline.devtools.infra import KafkaNode, RedisNode
from driftline.kafkaio import provision_topics
from driftline.settings import KafkaSettings

from .conftest import Ingestion

EVENTS_SENT = 4_000
RATE = 150
"""Events per second kcat is fed at: the stream runs ~27 s, all of it under load."""

BURNERS = 2 * (os.cpu_count() or 2)
"""Busy loops: twice as many as cores, so the broker, Redis and ingestion get a share."""


@pytest.fixture
def loaded_machine() -> Iterator[None]:
    """Every core busy, from before the broker starts until the test ends."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BURNERS)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


@pytest.fixture
def kafka(loaded_machine: None, tmp_path: Path) -> Iterator[KafkaNode]:
    """This test's own broker, formatted and started while the machine is loaded."""
    with own_kafka_node(tmp_path / "kafka") as node:
        yield node


@pytest.fixture
def redis_server(loaded_machine: None, tmp_path: Path) -> Iterator[RedisNode]:
    with own_redis_node(tmp_path / "redis") as node:
        yield node


def _feed(bootstrap: str, events: list[dict[str, Any]]) -> subprocess.CompletedProcess[bytes]:
    """kcat producing ``events`` with ``acks=all``, paced at :data:`RATE` per second."""
    kcat = subprocess.Popen(
        ["kcat", "-P", "-b", bootstrap, "-t", EVENTS.name, "-K", "|", "-X", "acks=all"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert kcat.stdin is not None
    start = time.monotonic()
    for i, event in enumerate(events):
        if (ahead := start + i / RATE - time.monotonic()) > 0:
            time.sleep(ahead)
        kcat.stdin.write(f"{event['entity_id']}|{json.dumps(event)}\n".encode())
        kcat.stdin.flush()
    _, err = kcat.communicate(timeout=120)
    return subprocess.CompletedProcess(kcat.args, kcat.returncode, b"", err)


async def test_acks_all_writes_succeed_on_a_broker_started_under_load(
    kafka: KafkaNode, ingestion_factory: Callable[..., Ingestion], tmp_path: Path
) -> None:
    await provision_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers))
    ingestion = ingestion_factory()
    run = uuid.uuid4().hex[:8]
    events = agrawal_events(run, EVENTS_SENT)

    fed = _feed(kafka.bootstrap_servers, events)

    assert fed.returncode == 0, fed.stderr.decode(errors="replace")
    assert b"Delivery failed" not in fed.stderr, fed.stderr.decode(errors="replace")
    valid = await collect(
        kafka.bootstrap_servers,
        [EVENTS_VALID],
        lambda r: json.loads(r.value)["event_id"].startswith(f"{run}-"),
        EVENTS_SENT,
        timeout=180,
    )
    ids = sorted(json.loads(r.value)["event_id"] for r in valid)
    assert ids == sorted(e["event_id"] for e in events), (
        f"{len(ids)} valid events for {EVENTS_SENT} sent ({len(set(ids))} distinct)"
    )
    log = ingestion.log.read_text(errors="replace")
    refused = [line for line in log.splitlines() if "NotEnoughReplicas" in line]
    assert not refused, f"{len(refused)} writes answered NOT_ENOUGH_REPLICAS, e.g. {refused[:3]}"
