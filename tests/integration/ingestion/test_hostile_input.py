"""The hostile-input corpus against a running ingestion process, the real broker and Redis.

Records are produced with kcat, a client this project did not write; the
outcomes are read back from the topics and the consumer group's offsets.  After
the corpus a stream of valid records must flow: every one arrives, every hostile
record is on the dead-letter topic at its source offset with its reason, the
group's lag returns to zero, and the service process is the one that started.

The time from the last hostile record produced to the first following valid
record downstream is printed per topic (run with ``-s`` to see it); it is a
figure for the report, not an assertion.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from support.hostile import (
    JUST_UNDER_BROKER_LIMIT,
    Case,
    corpus,
    valid_stream,
    write_label_featuresets,
)
from support.hostile import event as loans_event
from support.records import collect, kcat_produce

from driftline.contracts.messages import DeadLetter, DlqReason
from driftline.contracts.topics import DLQ, EVENTS, EVENTS_VALID, LABELS, LABELS_VALID, Topic
from driftline.devtools.infra import RedisNode, free_port
from driftline.ingestion.core import KEY_CHARS
from driftline.ingestion.writer import FAULT_KEEP_BYTES
from driftline.kafkaio import provision_topics
from driftline.settings import KafkaSettings

from .conftest import ROOT, start_ingestion

TOPICS = {"event": (EVENTS, EVENTS_VALID), "label": (LABELS, LABELS_VALID)}


def kcat_one(bootstrap: str, topic: Topic, case: Case, partition: int | None = None) -> None:
    """Produce one case with kcat: key and value on one line, headers with ``-H``,
    an empty value as NULL (``-Z``)."""
    key = case.key or b""
    assert b"\t" not in key and b"\n" not in key
    assert case.value is None or b"\n" not in case.value
    args = ["kcat", "-P", "-b", bootstrap, "-t", topic.name, "-K", "\t", "-Z"]
    args += ["-X", "message.max.bytes=2000000"]
    if partition is not None:
        args += ["-p", str(partition)]
    for name, value in case.headers:
        args += ["-H", name + b"=" + value]  # type: ignore[list-item]
    subprocess.run(args, input=key + b"\t" + (case.value or b"") + b"\n", check=True, timeout=60)


def positions(bootstrap: str, topic: Topic, run: str) -> dict[bytes, tuple[int, int]]:
    """``key -> (partition, offset)`` of this run's records on ``topic`` (keys start with
    ``<run>-k-``), read with kcat: it reads records aiokafka cannot decode."""
    args = ["kcat", "-C", "-b", bootstrap, "-t", topic.name, "-o", "beginning", "-e", "-q"]
    out = subprocess.run(
        [*args, "-f", "%p %o %k\n"], capture_output=True, check=True, timeout=120
    ).stdout
    found = {}
    for line in out.splitlines():
        partition, offset, key = line.split(b" ", 2)
        if key.startswith(f"{run}-k-".encode()):
            found[key] = (int(partition), int(offset))
    return found


async def lag(bootstrap: str, group: str, topic: Topic) -> dict[int, int]:
    """End offset minus the group's committed offset, per partition of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        tps = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    return {tp.partition: ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps}


async def wait_for_zero_lag(bootstrap: str, group: str, topic: Topic, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    left: dict[int, int] = {}
    while time.monotonic() < deadline:
        left = await lag(bootstrap, group, topic)
        if not any(left.values()):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{group} still lags on {topic.name}: {left}")


class Arrivals:
    """Watches a topic from its current end and notes when each record of a run arrives."""

    def __init__(self, bootstrap: str, topic: Topic, keep: Callable[[Any], bool]) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        self.topic = topic
        self.keep = keep
        self.seen: list[tuple[float, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Arrivals:
        await self.consumer.start()
        tps = [TopicPartition(self.topic.name, p) for p in range(self.topic.partitions)]
        self.consumer.assign(tps)
        for tp, end in (await self.consumer.end_offsets(tps)).items():
            self.consumer.seek(tp, end)
        self._task = asyncio.create_task(self._watch())
        return self

    async def _watch(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            self.seen += [(now, r) for recs in batch.values() for r in recs if self.keep(r)]

    async def wait(self, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


@pytest.fixture
def featuresets(tmp_path: Path) -> Path:
    return write_label_featuresets(tmp_path / "featuresets")


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample on a /metrics page (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def stalled_flag(text: str, topic: str) -> float:
    """``driftline_consumer_stalled`` of ``topic``: 1 when any of its partitions is stalled
    (every partition that went through has the gauge, at 0 while it moves)."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("driftline_consumer_stalled{") and f'topic="{topic}"' in line
    ]
    return max(values, default=0.0)


@pytest.mark.parametrize("kind", ["event", "label"])
async def test_hostile_records_are_dead_lettered_and_valid_ones_keep_flowing(
    kafka: Any, ingestion_factory: Callable[..., Any], featuresets: Path, kind: str
) -> None:
    run = uuid.uuid4().hex[:8]
    source, valid_topic = TOPICS[kind]
    svc = ingestion_factory(DRIFTLINE_INGESTION__FEATURESETS_DIR=str(featuresets))
    pid = svc.proc.pid
    bootstrap = kafka.bootstrap_servers
    cases = corpus(kind, run)  # type: ignore[arg-type]
    stream = valid_stream(kind, run, 300)  # type: ignore[arg-type]

    def ours(r: Any) -> bool:
        return r.key is not None and r.key.decode().startswith(f"{run}-c")

    async with Arrivals(bootstrap, valid_topic, ours) as arrivals:
        for case in cases:
            await asyncio.to_thread(kcat_one, bootstrap, source, case)
        last_hostile = time.monotonic()
        await asyncio.to_thread(
            kcat_produce, bootstrap, source, [(k, json.dumps(d).encode()) for k, d in stream]
        )
        await arrivals.wait(len(stream))
    first_valid = min(t for t, _ in arrivals.seen)
    print(
        f"\n[figure] {source.name}: {first_valid - last_hostile:.3f} s from the last hostile "
        f"record produced to the first following valid {kind} on {valid_topic.name}"
    )

    # Every valid record arrived, once.
    got = sorted(json.loads(r.value)["event_id"] for _, r in arrivals.seen)
    assert got == sorted(d["event_id"] for _, d in stream)

    # Every hostile record is on the DLQ, at its source offset, with its reason.
    where = positions(bootstrap, source, run)
    assert len(where) == len(cases)
    by_key = {case.key: case for case in cases}
    wanted = {pos: by_key[key] for key, pos in where.items()}

    def letter_of_ours(r: Any) -> bool:
        d = DeadLetter.model_validate_json(r.value)
        return d.source_topic == source.name and (d.source_partition, d.source_offset) in wanted

    records = await collect(bootstrap, [DLQ], letter_of_ours, want=len(cases))
    letters = {}
    for r in records:
        d = DeadLetter.model_validate_json(r.value)
        letters[(d.source_partition, d.source_offset)] = (d, r)
    assert set(letters) == set(wanted), "a hostile record has no dead letter"
    assert len(records) == len(cases), "a hostile record has two dead letters"
    for pos, case in wanted.items():
        letter, record = letters[pos]
        assert letter.reason is case.expect, (case.name, letter.detail)
        assert case.detail in letter.detail, (case.name, letter.detail)
        assert letter.kind == kind and letter.source == "kafka"
        if not case.decodable:
            assert letter.truncated and letter.original_size is None, case.name
            continue
        raw = case.value or b""
        assert letter.original_size == len(raw), case.name
        assert letter.original_sha256 == hashlib.sha256(raw).hexdigest(), case.name
        assert raw.startswith(letter.original()), case.name
        assert len(record.value) + len(record.key or b"") < KafkaSettings().max_message_bytes
    under = next(c for c in cases if c.name == "just under the broker's limit")
    big, _ = letters[where[under.key]]  # type: ignore[index]
    assert big.truncated and big.original_size == JUST_UNDER_BROKER_LIMIT
    assert len(big.original()) == KafkaSettings().max_record_bytes
    huge = next(c for c in cases if c.name == "a huge key")
    letter, record = letters[where[huge.key]]  # type: ignore[index]
    assert huge.key is not None and letter.original_key == huge.key[:KEY_CHARS].decode()
    assert record.key == huge.key[:KEY_CHARS]

    # The group has consumed everything, and nothing restarted or stalled.
    await wait_for_zero_lag(bootstrap, svc.env["DRIFTLINE_INGESTION__CONSUMER_GROUP"], source)
    assert svc.proc.poll() is None and svc.proc.pid == pid
    log = svc.log.read_text(errors="replace")
    assert "Traceback" not in log and "consumer stalled" not in log
    metrics = httpx.get(f"{svc.url}/metrics").text
    assert stalled_flag(metrics, source.name) == 0
    for reason in {c.expect for c in cases if c.expect is not None}:
        assert metric(
            metrics,
            "driftline_ingested_records_total",
            kind=kind,
            outcome="dead_letter",
            reason=reason.value,
            via="kafka",
        ) >= sum(c.expect is reason for c in cases)


def _flood_headers(count: int) -> dict[str, str]:
    return {f"x-flood-{i}": "v" * 16 for i in range(count)}


async def test_every_bad_http_request_gets_its_reason_and_never_a_500(
    kafka: Any, ingestion_factory: Callable[..., Any], featuresets: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    svc = ingestion_factory(
        DRIFTLINE_INGESTION__FEATURESETS_DIR=str(featuresets),
        DRIFTLINE_INGESTION__MAX_RECORDS_PER_REQUEST="50",
    )
    limit = KafkaSettings().max_message_bytes
    async with httpx.AsyncClient(base_url=svc.url, timeout=60) as client:
        for kind in ("event", "label"):
            for case in corpus(kind, run):  # type: ignore[arg-type]
                if not case.http:
                    continue
                headers = _flood_headers(400) if case.headers else {}
                resp = await client.post(f"/v1/{kind}s", content=case.value, headers=headers)
                assert resp.status_code == 422, (case.name, resp.status_code, resp.text[:300])
                [rejected] = resp.json()["rejected"]
                assert rejected["reason"] == case.expect.value, (case.name, rejected)  # type: ignore[union-attr]
                assert case.detail in rejected["detail"], (case.name, rejected)

        # An empty body (HTTP's tombstone).
        empty = await client.post("/v1/events", content=b"")
        assert empty.status_code == 422
        assert empty.json()["rejected"][0]["reason"] == "unparseable"

        # Over the body limit, with a Content-Length: refused before it is read.
        over = await client.post("/v1/events", content=b"[" + b" " * (3 * 1024 * 1024) + b"]")
        assert over.status_code == 413, over.text
        assert over.json()["reason"] == "too_large" and over.json()["limit"] == limit
        assert str(limit) in over.json()["detail"]

        # Over the limit without a length (chunked): refused while reading.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b" " * 65536

        chunked = await client.post("/v1/labels", content=chunks())
        assert chunked.status_code == 413, chunked.text
        assert chunked.json()["reason"] == "too_large"

        # More records than one request may hold: refused whole.
        many = [loans_event(f"{run}-m{i}", f"{run}-c{i}") for i in range(51)]
        refused = await client.post("/v1/events", json=many)
        assert refused.status_code == 422
        assert refused.json()["reason"] == "unparseable" and refused.json()["limit"] == 50
        assert "max_records_per_request" in refused.json()["detail"]

        # 100,000 levels of '[' (the body): 100 KB, over the per-record limit.
        deep = await client.post("/v1/events", content=b"[" * 100_000)
        assert deep.status_code == 422
        assert deep.json()["rejected"][0]["reason"] == "too_large"

        # A bad element among good ones: only it is rejected, with its own bytes.
        mixed = [*many[:3], {"event_id": f"{run}-x"}, many[3]]
        resp = await client.post("/v1/events", json=mixed)
        assert resp.status_code == 422
        assert resp.json()["accepted"] == 4
        assert [(r["index"], r["reason"], r["event_id"]) for r in resp.json()["rejected"]] == [
            (3, "schema", f"{run}-x")
        ]

        # And the service still takes valid records.
        ok = await client.post("/v1/events", json=loans_event(f"{run}-ok", f"{run}-c0"))
        assert ok.status_code == 200 and ok.json() == {"accepted": 1, "rejected": []}
    assert svc.proc.poll() is None
    assert "Traceback" not in svc.log.read_text(errors="replace")


async def test_a_dead_letter_the_topic_refuses_is_isolated_and_the_partition_moves_on(
    kafka: Any, ingestion_factory: Callable[..., Any]
) -> None:
    """The issue's stall, reproduced by a limit raised without altering the topics.

    With ``kafka.max_record_bytes`` at 1 MB the producer lets a 1.2 MB dead letter
    through, but the topics (created at 1 MiB) refuse it.  The batch is split
    until that record is alone, it is dead-lettered keeping its first bytes, and
    the records behind it on the same partition flow.
    """
    run = uuid.uuid4().hex[:8]
    bootstrap = kafka.bootstrap_servers
    await provision_topics(KafkaSettings(bootstrap_servers=bootstrap))  # at 1 MiB
    svc = ingestion_factory(DRIFTLINE_KAFKA__MAX_RECORD_BYTES="1000000")
    pid = svc.proc.pid
    before = [loans_event(f"{run}-a{i}", f"{run}-c{i}") for i in range(20)]
    after = [loans_event(f"{run}-b{i}", f"{run}-c{i}") for i in range(20)]
    bad = loans_event(f"{run}-big", f"{run}-c0") | {"pad": "p" * 900_000}  # schema: no 'pad'
    bad_bytes = json.dumps(bad).encode()
    partition = 0
    for doc in [*before, bad, *after]:
        key = f"{run}-k-{doc['event_id']}".encode()
        kcat_one(bootstrap, EVENTS, Case("", json.dumps(doc).encode(), None, key=key), partition)

    def ours(r: Any) -> bool:
        return r.key is not None and r.key.decode().startswith(f"{run}-c")

    valid = await collect(bootstrap, [EVENTS_VALID], ours, want=40)
    assert sorted(json.loads(r.value)["event_id"] for r in valid) == sorted(
        d["event_id"] for d in [*before, *after]
    )
    where = positions(bootstrap, EVENTS, run)
    big_at = where[f"{run}-k-{run}-big".encode()]

    def the_letter(r: Any) -> bool:
        d = DeadLetter.model_validate_json(r.value)
        return d.source_topic == EVENTS.name and (d.source_partition, d.source_offset) == big_at

    [record] = await collect(bootstrap, [DLQ], the_letter, want=1)
    letter = DeadLetter.model_validate_json(record.value)
    assert letter.reason is DlqReason.TOO_LARGE and "MessageSizeTooLargeError" in letter.detail
    assert letter.truncated and letter.original() == bad_bytes[:FAULT_KEEP_BYTES]
    assert letter.original_size == len(bad_bytes)
    assert letter.original_sha256 == hashlib.sha256(bad_bytes).hexdigest()

    await wait_for_zero_lag(bootstrap, svc.env["DRIFTLINE_INGESTION__CONSUMER_GROUP"], EVENTS)
    assert svc.proc.poll() is None and svc.proc.pid == pid
    log = svc.log.read_text(errors="replace")
    assert re.search(rf"{EVENTS.name}\[{partition}\]@{big_at[1]} cannot be written", log), log[
        -3000:
    ]
    # Counted for the RecordsSkipped alert (the group reads the whole topic: records of
    # other tests that are as large are isolated too).
    metrics = httpx.get(f"{svc.url}/metrics").text
    skipped = metric(
        metrics, "driftline_records_skipped_total", topic=EVENTS.name, reason="too_large"
    )
    assert skipped >= 1

    # Over HTTP the same record is answered as rejected (too_large), not with a 500,
    # and the producer takes valid records afterwards.
    async with httpx.AsyncClient(base_url=svc.url, timeout=60) as client:
        resp = await client.post("/v1/events", content=bad_bytes)
        assert resp.status_code == 422, resp.text[:500]
        [rejected] = resp.json()["rejected"]
        assert rejected["reason"] == "too_large" and "refused" in rejected["detail"]
        for i in range(3):
            ok = await client.post("/v1/events", json=loans_event(f"{run}-h{i}", f"{run}-c{i}"))
            assert ok.status_code == 200, ok.text


async def test_redis_down_is_retried_reported_as_a_stall_and_nothing_is_lost(
    kafka: Any, ingestion_env: dict[str, str], tmp_path: Path
) -> None:
    """The world's fault is not a record's: the same records wait, then all go through."""
    run = uuid.uuid4().hex[:8]
    bootstrap = kafka.bootstrap_servers
    redis = RedisNode(tmp_path / "redis-state", port=free_port(), infra_dir=ROOT / "infra")
    redis.start(timeout_s=30)
    env = {
        **ingestion_env,
        "DRIFTLINE_REDIS__PORT": str(redis.port),
        "DRIFTLINE_KAFKA__STALL_AFTER_S": "1",
    }
    group = env["DRIFTLINE_INGESTION__CONSUMER_GROUP"]
    try:
        svc = start_ingestion(env, tmp_path / "ingestion.log")
    except BaseException:
        redis.stop()
        raise
    try:
        # The group catches up with whatever is on the topic, then Redis goes away.
        await wait_for_zero_lag(bootstrap, group, EVENTS, timeout=120)
        redis.stop()
        events = [loans_event(f"{run}-r{i}", f"{run}-c{i}") for i in range(10)]
        kcat_produce(bootstrap, EVENTS, [(run, json.dumps(e).encode()) for e in events])
        async with httpx.AsyncClient(base_url=svc.url, timeout=60) as client:
            down = await client.post("/v1/events", json=events[0])
        assert down.status_code == 503, down.text
        assert down.json()["reason"] == "unavailable" and "Redis" in down.json()["detail"]

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "consumer stalled" not in svc.log.read_text():
            await asyncio.sleep(0.2)
        log = svc.log.read_text()
        assert re.search(r"consumer stalled: driftline\.events\[\d\] has failed at offset", log)
        stalled = httpx.get(f"{svc.url}/metrics").text
        assert stalled_flag(stalled, EVENTS.name) == 1
        assert sum((await lag(bootstrap, group, EVENTS)).values()) == len(events)

        redis.start(timeout_s=30)

        def ours(r: Any) -> bool:
            return r.key is not None and r.key.decode().startswith(f"{run}-c")

        valid = await collect(bootstrap, [EVENTS_VALID], ours, want=len(events))
        assert sorted(json.loads(r.value)["event_id"] for r in valid) == sorted(
            e["event_id"] for e in events
        )
        await wait_for_zero_lag(bootstrap, group, EVENTS)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "consumer resumed" not in svc.log.read_text():
            await asyncio.sleep(0.2)
        assert "consumer resumed: driftline.events[" in svc.log.read_text()
        resumed = httpx.get(f"{svc.url}/metrics").text
        assert stalled_flag(resumed, EVENTS.name) == 0
        assert svc.proc.poll() is None
    finally:
        svc.proc.terminate()
        svc.proc.wait(20)
        redis.stop()
