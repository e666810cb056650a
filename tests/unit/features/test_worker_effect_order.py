"""A feature vector is handed to Kafka only once its event is in the online values.

Regression test for an intermittent failure of the SIGKILL integration test
(``count_1h in Redis: assert 437 == 438``): the worker used to send a batch's
vectors and run its Redis pipeline at the same time, so a reader that saw the
last vector on ``driftline.features`` could still read the entity's previous
online values.  For a late (out-of-order) event the raw fields do not change,
so only its aggregates showed the missing event.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from river.datasets import synth

from driftline.contracts.messages import ValidEvent
from driftline.features.metrics import FeaturesMetrics
from driftline.features.processor import SourceRecord
from driftline.features.worker import FeaturesWorker
from driftline.online_store import FeatureStatus, InMemoryOnlineStore
from driftline.runtime import Health
from driftline.specs import load_featuresets

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


class _Batch:
    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def append(self, *, key: bytes, value: bytes, timestamp: Any, headers: Any) -> object:
        self.keys.append(key)
        return object()  # room left: the real builder returns record metadata


class _CountingAtSendProducer:
    """Stands in for the feature-log producer: at each handover, reads the online count."""

    def __init__(self, store: InMemoryOnlineStore, spec: Any) -> None:
        self.store = store
        self.spec = spec
        self.counts_at_send: list[Any] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(6))

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(
        self, batch: _Batch, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        for key in batch.keys:
            await self._count(key)
        return self._done()

    async def send(self, topic: str, value: bytes, key: bytes, **_: Any) -> asyncio.Future[None]:
        await self._count(key)
        return self._done()

    async def _count(self, key: bytes) -> None:
        rows = await self.store.read(self.spec, [key.decode()], ["count_1h"], NOW.timestamp())
        read = rows[0][0]
        self.counts_at_send.append(read.value if read.status is FeatureStatus.PRESENT else None)

    @staticmethod
    def _done() -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _record(offset: int, seconds_before_now: int, features: dict[str, Any]) -> SourceRecord:
    event = ValidEvent(
        event_id=f"e{offset}",
        entity_id="c-1",
        event_time=NOW - timedelta(seconds=seconds_before_now),
        featureset="loans",
        featureset_version=1,
        features=features,
        ingested_at=NOW,
    )
    return SourceRecord(0, offset, b"c-1", event.model_dump_json().encode())


async def test_online_values_are_written_before_the_vectors_are_sent(tmp_path: Path) -> None:
    catalog = load_featuresets(ROOT / "examples" / "featuresets")
    spec = catalog.resolve("loans")
    store = InMemoryOnlineStore()
    worker = FeaturesWorker(
        bootstrap_servers="127.0.0.1:9",
        replication_factor=1,
        catalog=catalog,
        store=store,
        metrics=FeaturesMetrics(),
        health=Health("features"),
    )
    producer = _CountingAtSendProducer(store, spec)
    worker._producer = producer  # a stand-in for the batch API
    states: dict[str, Any] = {}
    rows = [x for x, _ in synth.Agrawal(seed=1).take(3)]

    # Batch 1: the newest event.  Batch 2: two late ones, which change the
    # aggregates but not the raw fields (the case the integration test caught).
    for batch in ([_record(1, 0, rows[0])], [_record(2, 120, rows[1]), _record(3, 60, rows[2])]):
        outcome = worker.processor.process(batch, states)
        await worker._publish_and_write(outcome)

    # Every vector of a batch is sent after the batch's values are readable.
    assert producer.counts_at_send == [1, 3, 3]
