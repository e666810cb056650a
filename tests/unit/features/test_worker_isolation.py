"""An event that makes processing raise is dead-lettered; the worker and its batch go on.

The worker used to end the process when a batch raised (``os._exit``), so the same
event was redone, and raised again, after every restart: one event halted the
partition for good.  Here the raising event is real: two ``-2**63`` amounts (each a
valid int64) overflow an int ``sum`` bucket past what the changelog's JSON codec
takes (``TypeError: Integer exceeds 64-bit range``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from driftline.contracts.messages import DeadLetter, DlqReason, FeatureVector, ValidEvent
from driftline.contracts.topics import DLQ, EVENTS_VALID, FEATURES
from driftline.features.metrics import FeaturesMetrics
from driftline.features.processor import SourceRecord, state_key
from driftline.features.worker import CHANGELOG_TOPIC, FeaturesWorker
from driftline.online_store import FeatureStatus, InMemoryOnlineStore, StoreUnavailable
from driftline.runtime import Health
from driftline.specs import FeatureSetCatalog, FeatureSetSpec
from driftline.telemetry import ConsumerHealth

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
LEDGER = FeatureSetSpec(
    name="ledger", version=1, entity="account", fields={"amount": {"type": "int"}},
    aggregations=[{"field": "amount", "fn": "sum", "window": "1h"}],
)  # fmt: skip
MIN_INT64 = -(2**63)


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: Any, headers: Any) -> object:
        self.records.append((key, value))
        return object()  # room left: the real builder returns record metadata


class _Producer:
    """Stands in for the worker's producer (no broker): keeps what was sent, per topic."""

    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[bytes | None, bytes, int | None]]] = defaultdict(list)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(6))

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        self.sent[topic] += [(k, v, partition) for k, v in batch.records]
        return self._done()

    async def send(self, topic: str, value: bytes, key: bytes | None = None, **_: Any) -> Any:
        self.sent[topic].append((key, value, None))
        return self._done()

    @staticmethod
    def _done() -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _Worker(FeaturesWorker):
    """The worker, with its changelog read from what the stand-in producer was sent."""

    producer: _Producer

    async def _read_changelog(self, partitions: Any) -> dict[int, dict[str, bytes]]:
        out: dict[int, dict[str, bytes]] = {p: {} for p in partitions}
        for key, value, partition in self.producer.sent[CHANGELOG_TOPIC]:
            if partition in out and key is not None:
                out[partition][key.decode()] = value
        return out


def _event(offset: int, entity: str, amount: int) -> SourceRecord:
    event = ValidEvent(
        event_id=f"e{offset}", entity_id=entity, event_time=NOW + timedelta(seconds=offset),
        featureset="ledger", featureset_version=1, features={"amount": amount}, ingested_at=NOW,
    )  # fmt: skip
    return SourceRecord(0, offset, entity.encode(), event.model_dump_json().encode())


def _worker(store: InMemoryOnlineStore) -> _Worker:
    worker = _Worker(
        bootstrap_servers="127.0.0.1:9",
        replication_factor=1,
        catalog=FeatureSetCatalog([LEDGER]),
        store=store,
        metrics=FeaturesMetrics(),
        health=Health("features"),
        max_record_bytes=1024,
    )
    worker.producer = _Producer()
    worker._producer = worker.producer
    worker.table.adopt(0, {})  # partition 0 assigned, nothing on its changelog yet
    return worker


async def test_the_event_that_raises_is_dead_lettered_and_the_others_go_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = InMemoryOnlineStore()
    worker = _worker(store)
    # Earlier batch: "poison" has one -2**63 on its changelog already.
    await worker.handle_records([_event(0, "poison", MIN_INT64)])
    garbage = SourceRecord(0, 3, b"x", b"\xff{ not json")
    batch = [
        _event(1, "fresh", 10),  # a new entity, created by this batch before it fails
        _event(2, "poison", MIN_INT64),  # its sum no longer fits the changelog's codec
        garbage,
        _event(4, "poison", 5),  # valid: the sum is back in range without event 2
        _event(5, "fresh", 20),
    ]
    with caplog.at_level(logging.WARNING):
        await worker.handle_records(batch)

    vectors = [
        FeatureVector.model_validate_json(v) for _, v, _ in worker.producer.sent[FEATURES.name]
    ]
    # One vector per event that could be used, each exactly once (event 2 left nothing).
    assert [v.event_id for v in vectors] == ["e0", "e1", "e4", "e5"]
    sums = [float(MIN_INT64), 10.0, float(MIN_INT64 + 5), 30.0]
    assert [v.values["amount_sum_1h"] for v in vectors] == sums

    letters = [DeadLetter.model_validate_json(v) for _, v, _ in worker.producer.sent[DLQ.name]]
    by_offset = {d.source_offset: d for d in letters}
    assert set(by_offset) == {2, 3}
    failed = by_offset[2]
    assert failed.reason is DlqReason.PROCESSING_ERROR
    assert failed.source_topic == EVENTS_VALID.name and failed.source_partition == 0
    assert "TypeError: Integer exceeds 64-bit range" in failed.detail
    assert failed.original() == batch[1].value and not failed.truncated
    assert by_offset[3].reason is DlqReason.UNPARSEABLE
    assert by_offset[3].original() == garbage.value

    # The entity states are those of the events that went through, and so is the changelog.
    poison = worker.table.get(state_key("ledger", "poison"))
    assert poison is not None and poison.offset == 4
    assert poison.current() == {"amount_sum_1h": float(MIN_INT64 + 5)}
    stored = await worker._read_changelog([0])
    assert orjson.loads(stored[0]["ledger:poison"])["o"] == 4
    assert orjson.loads(stored[0]["ledger:fresh"])["o"] == 5
    [[amount, total]] = await store.read(
        LEDGER, ["poison"], ["amount", "amount_sum_1h"], NOW.timestamp() + 60
    )
    assert amount.status is FeatureStatus.PRESENT and amount.value == 5
    assert total.value == pytest.approx(MIN_INT64 + 5)

    health = worker.consumer_health
    assert health.skipped(EVENTS_VALID.name, "processing_error") == 1
    assert health.stalled() == []
    assert "skipped the record at driftline.events.valid[0]@2 (event e2): processing_error" in (
        caplog.text
    )


async def test_a_dead_letter_keeps_at_most_max_record_bytes_of_the_event() -> None:
    worker = _worker(InMemoryOnlineStore())
    huge = SourceRecord(0, 0, b"k", b"[" * 5000)  # not an event: dead-lettered by the processor
    await worker.handle_records([huge])
    [(_, value, _)] = worker.producer.sent[DLQ.name]
    letter = DeadLetter.model_validate_json(value)
    assert letter.reason is DlqReason.UNPARSEABLE
    assert letter.truncated and len(letter.original()) == 1024
    assert letter.original_size == 5000


class _FlakyStore(InMemoryOnlineStore):
    """An online store whose first writes fail as a store that is down does."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def write(self, featureset: str, writes: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("the online store is unavailable: Connection refused")
        await super().write(featureset, writes)


async def test_an_outage_is_waited_out_and_reported_as_a_stall_not_dead_lettered() -> None:
    store = _FlakyStore(failures=3)
    worker = _worker(store)
    worker.consumer_health = ConsumerHealth(CollectorRegistry(), stall_after_s=0.0)
    stalls: list[list[tuple[str, int, int]]] = []
    original = worker.consumer_health.failed

    def failed(positions: Any, error: object) -> None:
        original(positions, error)
        stalls.append(worker.consumer_health.stalled())

    worker.consumer_health.failed = failed  # type: ignore[method-assign]
    await worker.handle_records([_event(7, "acct", 1), _event(8, "acct", 2)])

    # Each failed attempt was reported at the batch's first offset, then cleared.
    assert stalls == [[(EVENTS_VALID.name, 0, 7)]] * 3
    assert worker.consumer_health.stalled() == []
    assert worker.producer.sent[DLQ.name] == []
    assert len(worker.producer.sent[FEATURES.name]) == 2


class _RefusingProducer(_Producer):
    """Refuses (as the broker would) every record keyed ``huge``."""

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        if any(key == b"huge" for key, _ in batch.records):
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(MessageSizeTooLargeError("the request is too large"))
            return failed
        return await super().send_batch(batch, topic, partition=partition)


async def test_a_vector_the_broker_refuses_is_dead_lettered_not_retried_forever() -> None:
    worker = _worker(InMemoryOnlineStore())
    worker.producer = worker._producer = _RefusingProducer()
    await worker.handle_records([_event(1, "a", 1), _event(2, "huge", 2), _event(3, "b", 3)])
    sent = [
        FeatureVector.model_validate_json(v).event_id
        for _, v, _ in worker.producer.sent[FEATURES.name]
    ]
    assert "e2" not in sent and {"e1", "e3"} <= set(sent)
    [(_, value, _)] = worker.producer.sent[DLQ.name]
    letter = DeadLetter.model_validate_json(value)
    assert letter.reason is DlqReason.PROCESSING_ERROR and letter.source_offset == 2
    assert "MessageSizeTooLargeError" in letter.detail
