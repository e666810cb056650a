"""The features worker as a real process against the harness's Kafka and Redis.

(a) every event's vector reaches ``driftline.features`` and each entity's online
values (Redis and gRPC) equal a brute-force recomputation from the events;
(b) the same holds when the worker is SIGKILLed mid-stream and restarted.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from driftline.contracts.messages import DeadLetter, DlqReason, FeatureVector, ValidEvent
from driftline.contracts.topics import DLQ, EVENTS_VALID, FEATURES
from driftline.devtools.infra import free_port
from driftline.features.columns import column_values
from driftline.kafkaio import provision_topics
from driftline.online_store import FeatureStatus
from driftline.online_store.redis_store import RedisOnlineStore
from driftline.settings import KafkaSettings
from driftline.specs import FeatureSetSpec, load_featuresets
from driftline.v1 import common_pb2, feature_store_pb2, feature_store_pb2_grpc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
FEATURESETS = ROOT / "examples" / "featuresets"
SPEC: FeatureSetSpec = load_featuresets(FEATURESETS).resolve("loans")


def make_events(n: int, n_entities: int, seed: int) -> list[ValidEvent]:
    """Events of unique entities, event times over the last 40 minutes, ~20% out of order."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    start = now - timedelta(minutes=40)
    events = []
    for i in range(n):
        t = start + timedelta(seconds=2400 * i / n)
        if rng.random() < 0.2:
            t -= timedelta(seconds=rng.uniform(0, 240))
        features = {
            "salary": round(rng.uniform(20000, 150000), 2),
            "commission": round(rng.uniform(0, 85000), 2),
            "age": rng.randint(20, 80),
            "elevel": rng.randint(0, 4),
            "car": rng.randint(1, 20),
            "zipcode": rng.randint(0, 8),
            "hvalue": round(rng.uniform(0, 1_200_000), 2),
            "hyears": rng.randint(1, 30),
            "loan": round(rng.uniform(0, 500_000), 2),
        }
        events.append(
            ValidEvent(
                event_id=f"{run}-{i}",
                entity_id=f"c-{run}-{rng.randrange(n_entities)}",
                event_time=t,
                featureset="loans",
                featureset_version=SPEC.version,
                features=features,
                ingested_at=now,
            )
        )
    return events


def expected_online(events: list[ValidEvent]) -> dict[str, dict[str, Any]]:
    """Brute force: raw fields of each entity's newest event, aggregates as of its newest time."""
    by_entity: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for e in events:
        by_entity.setdefault(e.entity_id, []).append((e.event_time.timestamp(), e.features))
    out = {}
    for entity, rows in by_entity.items():
        tmax = max(t for t, _ in rows)
        newest = [raw for t, raw in rows if t == tmax][-1]
        values: dict[str, Any] = {name: newest.get(name) for name in SPEC.fields}
        for agg in SPEC.aggregations:
            end = (math.floor(tmax / agg.hop_s) + 1) * agg.hop_s
            inside = [(t, raw) for t, raw in rows if end - agg.window <= t < end]
            xs = [float(raw[agg.field]) for _, raw in inside] if agg.field else []
            if agg.fn == "count":
                values[agg.name] = len(inside)
            elif agg.fn == "sum":
                values[agg.name] = math.fsum(xs)
            elif agg.fn == "mean":
                values[agg.name] = math.fsum(xs) / len(xs)
            elif agg.fn == "min":
                values[agg.name] = min(xs)
            elif agg.fn == "max":
                values[agg.name] = max(xs)
            elif agg.fn == "last":
                tl = max(t for t, _ in inside)
                values[agg.name] = [raw[agg.field] for t, raw in inside if t == tl][-1]
            else:
                m = math.fsum(xs) / len(xs)
                values[agg.name] = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / len(xs))
        out[entity] = values
    return out


def assert_same(got: Any, want: Any, what: str) -> None:
    if isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-6), what
    else:
        assert got == want, what


async def produce(bootstrap: str, events: list[ValidEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(
                EVENTS_VALID.name, value=e.model_dump_json().encode(), key=e.entity_id.encode()
            )
            for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class FeatureLog:
    """Reads ``driftline.features`` from the start and collects vectors by event id."""

    def __init__(self, bootstrap: str, wanted: set[str]) -> None:
        self.bootstrap = bootstrap
        self.wanted = wanted
        self.seen: dict[str, list[FeatureVector]] = {}
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False
        )
        await self._consumer.start()
        tps = [TopicPartition(FEATURES.name, p) for p in range(FEATURES.partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)

    async def poll(self) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
        for records in batches.values():
            for r in records:
                v = FeatureVector.model_validate_json(r.value)
                if v.event_id in self.wanted:
                    self.seen.setdefault(v.event_id, []).append(v)

    async def wait_for(
        self, count: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the worker exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.seen)} of {count} vectors after {timeout}s")
            await self.poll()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


class Worker:
    """``python -m driftline.features`` as a subprocess on free ports."""

    def __init__(self, kafka: Any, redis_server: Any, tmp: Path) -> None:
        self.grpc_port = free_port()
        self.admin_port = free_port()
        self.log = tmp / "worker.log"
        self.env = {
            **os.environ,
            "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "DRIFTLINE_REDIS__HOST": redis_server.host,
            "DRIFTLINE_REDIS__PORT": str(redis_server.port),
            "DRIFTLINE_FEATURES__GRPC_PORT": str(self.grpc_port),
            "DRIFTLINE_FEATURES__ADMIN__PORT": str(self.admin_port),
            "DRIFTLINE_FEATURES__FEATURESETS_DIR": str(FEATURESETS),
            "DRIFTLINE_INFRA__STATE_DIR": str(tmp / "state"),
            "DRIFTLINE_TELEMETRY__LOG_FORMAT": "text",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.features"], env=self.env, stdout=out, stderr=out
        )
        return self.proc

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode


@pytest.fixture
def worker(kafka: Any, redis_server: Any, tmp_path: Path) -> Iterator[Worker]:
    w = Worker(kafka, redis_server, tmp_path)
    yield w
    if w.proc is not None and w.proc.poll() is None:
        code = w.terminate()
        assert code == 0, w.log.read_text()[-3000:]


async def check_online_values(redis_server: Any, grpc_port: int, events: list[ValidEvent]) -> None:
    want = expected_online(events)
    store = RedisOnlineStore(redis_server.url)
    try:
        entities = sorted(want)
        rows = await store.read(SPEC, entities, SPEC.feature_names, time.time())
    finally:
        await store.close()
    for entity, row in zip(entities, rows, strict=True):
        for name, r in zip(SPEC.feature_names, row, strict=True):
            assert r.status is FeatureStatus.PRESENT, (entity, name, r)
            assert_same(r.value, want[entity][name], f"{entity}.{name} in Redis")

    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = feature_store_pb2_grpc.FeatureStoreStub(channel)
        resp = await stub.GetOnlineFeatures(
            feature_store_pb2.GetOnlineFeaturesRequest(featureset="loans", entity_ids=entities)
        )
        assert [c.name for c in resp.features] == SPEC.feature_names
        assert list(resp.entity_ids) == entities
        for column in resp.features:
            assert list(column.status) == [common_pb2.FEATURE_STATUS_PRESENT] * len(entities)
            assert all(0 <= age < 3_600_000 for age in column.age_ms)
            values = column_values(column)
            for entity, value in zip(entities, values, strict=True):
                assert value is not None, f"{entity}.{column.name} via gRPC"
                assert_same(value, want[entity][column.name], f"{entity}.{column.name} via gRPC")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetOnlineFeatures(
                feature_store_pb2.GetOnlineFeaturesRequest(featureset="nope", entity_ids=["x"])
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetOnlineFeatures(
                feature_store_pb2.GetOnlineFeaturesRequest(
                    featureset="loans", entity_ids=["x"], feature_names=["bogus"]
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_every_event_gets_a_vector_and_online_values_are_exact(
    kafka: Any, redis_server: Any, worker: Worker
) -> None:
    await provision_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers))
    events = make_events(3000, 50, seed=1)
    await produce(kafka.bootstrap_servers, events)
    proc = worker.start()
    log = FeatureLog(kafka.bootstrap_servers, {e.event_id for e in events})
    await log.start()
    try:
        await log.wait_for(len(events), timeout=90, proc=proc)
    finally:
        await log.stop()
    # Point-in-time: the vector carries the event's own raw values and version.
    first = {e.event_id: e for e in events}
    for event_id, vectors in log.seen.items():
        v = vectors[0]
        assert v.entity_id == first[event_id].entity_id
        assert v.featureset_version == SPEC.version
        for name, value in first[event_id].features.items():
            assert_same(v.values[name], value, name)
    await check_online_values(redis_server, worker.grpc_port, events)


async def test_sigkill_mid_stream_loses_and_double_counts_nothing(
    kafka: Any, redis_server: Any, worker: Worker
) -> None:
    await provision_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers))
    events = make_events(20000, 50, seed=2)
    half = len(events) // 2
    await produce(kafka.bootstrap_servers, events[:half])
    log = FeatureLog(kafka.bootstrap_servers, {e.event_id for e in events})
    await log.start()
    try:
        proc = worker.start()
        await log.wait_for(half // 3, timeout=90, proc=proc)
        worker.kill()  # mid-stream: about a third of the first half is done
        killed_at = len(log.seen)
        assert killed_at < half
        # Restart at once: the dead member is still in the group until its
        # session expires, so the new one joins through that rebalance.
        worker.start()
        await produce(kafka.bootstrap_servers, events[half:])
        await log.wait_for(len(events), timeout=180, proc=worker.proc)
    finally:
        await log.stop()
    assert set(log.seen) == {e.event_id for e in events}
    # Reading Redis right after the last vector is sound: the worker writes a
    # batch's online values before it sends the batch's vectors (pinned down
    # deterministically by tests/unit/features/test_worker_effect_order.py).
    await check_online_values(redis_server, worker.grpc_port, events)


async def test_events_of_an_aborted_transaction_are_not_counted(
    kafka: Any, redis_server: Any, worker: Worker
) -> None:
    """Ingestion writes in transactions; one killed mid-way is aborted and written again.

    The aborted copies sit in the log before the committed ones: a worker reading
    uncommitted records counted those events twice (seen in the SIGKILL chaos test).
    """
    await provision_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers))
    events = make_events(200, 10, seed=3)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        transactional_id=f"test-aborted-{uuid.uuid4().hex[:8]}",
        acks="all",
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        for e in events[:100]:
            await producer.send_and_wait(
                EVENTS_VALID.name, value=e.model_dump_json().encode(), key=e.entity_id.encode()
            )
        await producer.abort_transaction()
        async with producer.transaction():
            for e in events:
                await producer.send(
                    EVENTS_VALID.name, value=e.model_dump_json().encode(), key=e.entity_id.encode()
                )
    finally:
        await producer.stop()
    proc = worker.start()
    log = FeatureLog(kafka.bootstrap_servers, {e.event_id for e in events})
    await log.start()
    try:
        await log.wait_for(len(events), timeout=90, proc=proc)
    finally:
        await log.stop()
    # Each event once on the feature log, and counted once in its entity's aggregates.
    assert {e: len(v) for e, v in log.seen.items() if len(v) > 1} == {}
    await check_online_values(redis_server, worker.grpc_port, events)


async def wait_ready(w: Worker, timeout: float = 90) -> None:
    """Until the worker's /readyz says ready (it has joined the group and recovered)."""
    import json
    import urllib.request

    def ready() -> bool:
        try:
            url = f"http://127.0.0.1:{w.admin_port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(json.loads(r.read())["ready"])
        except OSError:
            return False

    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(ready):
        assert w.proc is not None and w.proc.poll() is None, "the worker exited"
        assert time.monotonic() < deadline, f"the worker was not ready within {timeout}s"
        await asyncio.sleep(0.2)


async def assigned_partitions(admin_port: int) -> int:
    """How many partitions of events.valid a worker reports lag for (i.e. has processed)."""
    import urllib.request

    text = await asyncio.to_thread(
        lambda: (
            urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5)
            .read()
            .decode()
        )
    )
    return sum(
        1
        for line in text.splitlines()
        if line.startswith("driftline_consumer_lag{") and EVENTS_VALID.name in line
    )


async def test_partitions_moving_between_workers_keep_aggregates_exact(
    kafka: Any, redis_server: Any, tmp_path: Path
) -> None:
    """Scale out to two workers mid-stream, then stop the first: its partitions move twice.

    Each move makes the new owner replay the partition's changelog; an entity's
    aggregates then go on from exactly the state the previous owner left.
    """
    await provision_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers))
    events = make_events(15000, 60, seed=3)
    thirds = [events[:5000], events[5000:10000], events[10000:]]
    first = Worker(kafka, redis_server, tmp_path / "a")
    second = Worker(kafka, redis_server, tmp_path / "b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    log = FeatureLog(kafka.bootstrap_servers, {e.event_id for e in events})
    await log.start()
    try:
        first.start()
        await produce(kafka.bootstrap_servers, thirds[0])
        await log.wait_for(5000, timeout=90, proc=first.proc)
        second.start()  # the group rebalances: some partitions move to the second worker
        await wait_ready(second)
        # Spread over a few seconds, so that the rebalance lands in the middle.
        for i in range(0, len(thirds[1]), 500):
            await produce(kafka.bootstrap_servers, thirds[1][i : i + 500])
            await asyncio.sleep(0.5)
        await log.wait_for(10000, timeout=120, proc=second.proc)
        both = (
            await assigned_partitions(first.admin_port),
            await assigned_partitions(second.admin_port),
        )
        assert first.terminate() == 0  # a clean leave: its partitions move to the second
        await produce(kafka.bootstrap_servers, thirds[2])
        await log.wait_for(len(events), timeout=120, proc=second.proc)
        # Both workers processed events (the work was shared after the scale-out).
        assert both[0] > 0 and both[1] > 0, both
        assert set(log.seen) == {e.event_id for e in events}
        await check_online_values(redis_server, second.grpc_port, events)
    finally:
        await log.stop()
        for w in (first, second):
            if w.proc is not None and w.proc.poll() is None:
                w.terminate()


async def test_an_event_that_makes_processing_raise_is_dead_lettered_and_the_rest_go_on(
    kafka: Any, redis_server: Any, worker: Worker, tmp_path: Path
) -> None:
    """A record fault inside processing: isolated, dead-lettered; the process stays up.

    Two ``-2**63`` amounts for one account (each a valid int64, so ingestion would
    take them) overflow the account's int ``sum`` past what the changelog's codec
    takes.  Before issue 14 the worker exited on it and redid it after every restart.
    """
    await provision_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers))
    run = uuid.uuid4().hex[:8]
    name = f"ledger_{run}"
    featuresets = tmp_path / "featuresets"
    featuresets.mkdir()
    (featuresets / "loans.yaml").write_text((FEATURESETS / "loans.yaml").read_text())
    (featuresets / "ledger.yaml").write_text(
        f"name: {name}\nversion: 1\nentity: account\nttl: 1d\n"
        "fields:\n  amount: {type: int}\n"
        "aggregations:\n  - {field: amount, fn: sum, window: 1h}\n"
    )
    worker.env["DRIFTLINE_FEATURES__FEATURESETS_DIR"] = str(featuresets)
    ledger = load_featuresets(featuresets).resolve(name)
    now = datetime.now(UTC)
    # All in one bucket of the 1h sum (an hour that began 30-90 minutes ago), so that
    # the two -2**63 amounts meet in it.
    hour = math.floor((now.timestamp() - 1800) / 3600) * 3600
    base = datetime.fromtimestamp(hour + 600, UTC)

    amount_of: dict[str, int] = {}

    def event(i: int, account: str, amount: int) -> ValidEvent:
        amount_of[f"{run}-{i}"] = amount
        return ValidEvent(
            event_id=f"{run}-{i}", entity_id=f"{account}-{run}", featureset=name,
            featureset_version=1, event_time=base + timedelta(seconds=i),
            features={"amount": amount}, ingested_at=now,
        )  # fmt: skip

    low = -(2**63)
    events = [
        event(0, "poison", low),
        *(event(i, f"a{i % 7}", i) for i in range(1, 40)),
        event(40, "poison", low),  # the sum overflows: processing raises
        *(event(i, f"a{i % 7}", i) for i in range(41, 80)),
        event(80, "poison", 5),  # fine again once event 40 is left out
    ]
    bad = events[40]
    good = [e for e in events if e is not bad]
    # Written straight to driftline.events.valid (past ingestion), with a garbage record.
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        sent = {}
        for e in events:
            fut = await producer.send(
                EVENTS_VALID.name, value=e.model_dump_json().encode(), key=e.entity_id.encode()
            )
            sent[e.event_id] = await fut
        garbage_at = await producer.send_and_wait(
            EVENTS_VALID.name, value=b"\xff{ garbage", key=f"garbage-{run}".encode()
        )
    finally:
        await producer.stop()

    proc = worker.start()
    log = FeatureLog(kafka.bootstrap_servers, {e.event_id for e in events})
    await log.start()
    try:
        await log.wait_for(len(good), timeout=90, proc=proc)
        letters = await dead_letters(
            kafka.bootstrap_servers,
            {(sent[bad.event_id].partition, sent[bad.event_id].offset),
             (garbage_at.partition, garbage_at.offset)},
            proc,
        )  # fmt: skip
        await log.poll()
    finally:
        await log.stop()
    # Every good event has its vector, once; the bad one none.
    assert set(log.seen) == {e.event_id for e in good}
    assert all(len(v) == 1 for v in log.seen.values())
    failed = letters[(sent[bad.event_id].partition, sent[bad.event_id].offset)]
    assert failed.reason is DlqReason.PROCESSING_ERROR
    assert "Integer exceeds 64-bit range" in failed.detail
    assert failed.original() == bad.model_dump_json().encode()
    garbage = letters[(garbage_at.partition, garbage_at.offset)]
    assert garbage.reason is DlqReason.UNPARSEABLE

    # The online values are those of the good events: the poison account's sum holds
    # events 0 and 80 only.
    store = RedisOnlineStore(redis_server.url)
    try:
        accounts = sorted({e.entity_id for e in good})
        rows = await store.read(ledger, accounts, ["amount", "amount_sum_1h"], time.time())
    finally:
        await store.close()
    for account, (amount, total) in zip(accounts, rows, strict=True):
        mine = [e for e in good if e.entity_id == account]
        assert amount.value == amount_of[mine[-1].event_id], account
        want = math.fsum(amount_of[e.event_id] for e in mine)
        assert total.value == pytest.approx(want), account
    metrics = await asyncio.to_thread(
        lambda: (
            urllib.request.urlopen(f"http://127.0.0.1:{worker.admin_port}/metrics", timeout=5)
            .read()
            .decode()
        )
    )
    assert (
        'driftline_records_skipped_total{reason="processing_error",topic="driftline.events.valid"}'
        " 1.0" in metrics
    )
    assert proc.poll() is None, worker.log.read_text()[-3000:]  # it never exited


async def dead_letters(
    bootstrap: str, wanted: set[tuple[int, int]], proc: subprocess.Popen[bytes]
) -> dict[tuple[int, int], DeadLetter]:
    """The dead letters of ``driftline.events.valid`` records at ``(partition, offset)``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[tuple[int, int], DeadLetter] = {}
    try:
        tps = [TopicPartition(DLQ.name, p) for p in range(DLQ.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        while set(found) != wanted:
            assert proc.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, f"dead letters {set(found)} of {wanted}"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    letter = DeadLetter.model_validate_json(r.value)
                    where = (letter.source_partition, letter.source_offset)
                    if letter.source_topic == EVENTS_VALID.name and where in wanted:
                        found[where] = letter
    finally:
        await consumer.stop()
    return found
