"""Poison pills, timed: from a hostile record to the next valid record processed, per topic.

Runs ingestion and the features worker as processes (``python -m driftline.<service>``)
on a broker and Redis of their own.  For each topic and each hostile record of the
corpus the tests use (``tests/support/hostile.py``: oversized, deeply nested, not
UTF-8, tombstone, huge key, header flood, undecodable header, numbers out of range,
labels of the wrong type …), in alternating rounds on one partition:

* **clean**: a valid record is produced; the time until its output appears downstream
  (``driftline.events`` → ``driftline.events.valid``, ``driftline.labels`` →
  ``driftline.labels.valid``, ``driftline.events.valid`` → ``driftline.features``);
* **after hostile**: the hostile record, then a valid one on the same partition; the
  time from producing the hostile record until the valid one's output appears.

The ratio of the two medians says what a hostile record costs the records behind
it (before issue 14 an oversized event made it "never").  It also checks that
every hostile record reached ``driftline.dlq`` and that neither service restarted.
Writes ``bench/out/poison.json``.

    uv run python bench/bench_poison.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from local_platform import local_platform, wait_ready  # bench/ is on sys.path as a script

from driftline.contracts.messages import DeadLetter
from driftline.contracts.topics import (
    DLQ,
    EVENTS,
    EVENTS_VALID,
    FEATURES,
    LABELS,
    LABELS_VALID,
    Topic,
)
from driftline.devtools.demo_env import isolated_env
from driftline.kafkaio import provision_topics
from driftline.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "poison.json"
sys.path.insert(0, str(ROOT / "tests"))  # the hostile corpus the tests use, as they use it

from support.hostile import Case, corpus, valid_stream, write_label_featuresets  # noqa: E402

LEDGER = """\
name: ledger
version: 1
entity: account
ttl: 1d
fields:
  amount: {type: int}
aggregations:
  - {field: amount, fn: sum, window: 1d}
"""
"""A feature set whose int sum two ``-2**63`` amounts overflow (past what the changelog's
codec takes): processing raises on the second, a record fault the worker isolates."""


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def valid_event_bytes(event_id: str) -> bytes:
    [(_, doc)] = valid_stream("event", event_id, 1)
    doc["event_id"] = event_id
    return dumps(doc)


def valid_label_bytes(event_id: str) -> bytes:
    [(_, doc)] = valid_stream("label", event_id, 1)
    doc["event_id"] = event_id
    return dumps(doc)


def ledger_event(event_id: str, amount: int) -> bytes:
    """A ValidEvent of ``ledger`` as ingestion writes it to driftline.events.valid."""
    return dumps(
        {
            "event_id": event_id,
            "entity_id": "poison-account",
            "event_time": "2026-11-23T16:00:00.000000Z",
            "featureset": "ledger",
            "featureset_version": 1,
            "features": {"amount": amount},
            "ingested_at": "2026-11-23T16:00:00.000000Z",
        }
    )


def internal_cases(run: str) -> list[Case]:
    """Hostile records of driftline.events.valid (written by ingestion, so internal)."""
    return [
        Case("garbage bytes", b"\x00\x01 not json", None),
        Case(
            "an unknown feature set",
            ledger_event(f"{run}-unknown", 1).replace(b'"ledger"', b'"nosuchset"'),
            None,
        ),
        Case("an int sum overflowing 64 bits", ledger_event(f"{run}-low", -(2**63)), None),
    ]


class Downstream:
    """Records arriving on the output topics, by event id (and DLQ letters by source offset)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.seen: dict[str, float] = {}
        self.letters: dict[tuple[str, int, int], DeadLetter] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            isolation_level="read_committed",
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        tps = [
            TopicPartition(t.name, p)
            for t in (EVENTS_VALID, LABELS_VALID, FEATURES, DLQ)
            for p in range(t.partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        self._task = asyncio.create_task(self._run(consumer))

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=50)
                now = time.perf_counter()
                for tp, records in batch.items():
                    for r in records:
                        if tp.topic == DLQ.name:
                            d = DeadLetter.model_validate_json(r.value)
                            key = (
                                d.source_topic or "",
                                d.source_partition or 0,
                                d.source_offset or 0,
                            )
                            self.letters[key] = d
                            continue
                        try:
                            event_id = json.loads(r.value)["event_id"]
                        except (ValueError, TypeError, KeyError):
                            continue  # the bench's own garbage on driftline.events.valid
                        self.seen.setdefault(f"{tp.topic}/{event_id}", now)
        finally:
            await consumer.stop()

    async def wait(self, topic: Topic, event_id: str, timeout: float = 60) -> float:
        key = f"{topic.name}/{event_id}"
        deadline = time.perf_counter() + timeout
        while key not in self.seen:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{event_id} did not reach {topic.name} within {timeout}s")
            await asyncio.sleep(0.005)
        return self.seen[key]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def produce(
    producer: AIOKafkaProducer, bootstrap: str, topic: Topic, case: Case, partition: int
) -> tuple[int, int]:
    """Produce ``case`` to ``partition``; its (partition, offset).

    aiokafka takes header names as text only: a case whose header names are not
    UTF-8 goes through kcat (its process start is then part of the time measured).
    """
    try:
        headers = [(k.decode("utf-8"), v) for k, v in case.headers]
    except UnicodeDecodeError:
        args = ["kcat", "-P", "-b", bootstrap, "-t", topic.name, "-p", str(partition), "-c", "1"]
        for k, v in case.headers:
            args += ["-H", (k + b"=" + v).decode("utf-8", "surrogateescape")]
        if case.key is not None:
            args += ["-k", case.key.decode("utf-8", "surrogateescape")]
        subprocess.run(args, input=case.value or b"", check=True, timeout=60)
        return partition, -1
    meta = await (
        await producer.send(
            topic.name, case.value, key=case.key, headers=headers or None, partition=partition
        )
    )
    return meta.partition, meta.offset


async def measure_topic(
    producer: AIOKafkaProducer,
    down: Downstream,
    bootstrap: str,
    source: Topic,
    out: Topic,
    valid: Callable[[str], bytes],
    cases: list[Case],
    rounds: int,
) -> dict[str, Any]:
    """Alternating clean / after-hostile rounds on one partition of ``source``."""
    run = uuid.uuid4().hex[:6]
    partition = 1
    clean: list[float] = []
    after: dict[str, list[float]] = {c.name: [] for c in cases}
    hostile: list[tuple[str, int, int]] = []
    n = 0
    for _ in range(rounds):
        for case in cases:
            n += 1
            vid = f"{run}-v{n}"
            t0 = time.perf_counter()
            await (await producer.send(source.name, valid(vid), partition=partition))
            clean.append(await down.wait(out, vid) - t0)
            n += 1
            vid = f"{run}-v{n}"
            t0 = time.perf_counter()
            at = await produce(producer, bootstrap, source, case, partition)
            hostile.append((source.name, *at))
            await (await producer.send(source.name, valid(vid), partition=partition))
            after[case.name].append(await down.wait(out, vid) - t0)
    counted = [h for h in hostile if h[2] >= 0]  # kcat does not say the offset
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(h in down.letters for h in counted):
        await asyncio.sleep(0.1)
    lettered = [down.letters[h].reason.value for h in counted if h in down.letters]
    clean_ms = statistics.median(clean) * 1000
    return {
        "source": source.name,
        "output": out.name,
        "clean_median_ms": round(clean_ms, 1),
        "after_hostile": {
            name: {
                "median_ms": round(statistics.median(v) * 1000, 1),
                "max_ms": round(max(v) * 1000, 1),
                "ratio_to_clean": round(statistics.median(v) * 1000 / clean_ms, 2),
            }
            for name, v in after.items()
        },
        "hostile_records": len(hostile),
        "hostile_records_with_offset": len(counted),
        "dead_letters_found_by_source_offset": len(lettered),
        "reasons": sorted(set(lettered)),
    }


def spawn(service: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", f"driftline.{service}"], env=env, stdout=out, stderr=out, cwd=ROOT
    )
    try:
        wait_ready(int(env[f"DRIFTLINE_{service.upper()}__ADMIN__PORT"]), proc, log, service)
    except SystemExit:
        proc.kill()
        raise
    return proc


async def bench(bootstrap: str, rounds: int) -> dict[str, Any]:
    await provision_topics(KafkaSettings(bootstrap_servers=bootstrap))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_request_size=2 * 1024 * 1024
    )
    await producer.start()
    down = Downstream(bootstrap)
    await down.start()
    run = uuid.uuid4().hex[:6]
    # The overflow needs the account's state at -2**63 first (one amount alone is fine).
    seed = ledger_event(f"{run}-seed", -(2**63))
    await (await producer.send(EVENTS_VALID.name, seed, partition=1))
    try:
        topics = [
            await measure_topic(
                producer, down, bootstrap, EVENTS, EVENTS_VALID, valid_event_bytes,
                corpus("event", run), rounds,
            ),
            await measure_topic(
                producer, down, bootstrap, LABELS, LABELS_VALID, valid_label_bytes,
                corpus("label", run), rounds,
            ),
            await measure_topic(
                producer, down, bootstrap, EVENTS_VALID, FEATURES, valid_internal,
                internal_cases(run), rounds,
            ),
        ]  # fmt: skip
    finally:
        await down.stop()
        await producer.stop()
    return {"rounds": rounds, "topics": topics}


def valid_internal(event_id: str) -> bytes:
    return ledger_event(event_id, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="Rounds per hostile kind.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="driftline-poison-") as tmp, local_platform() as p:
        env = isolated_env(
            bootstrap_servers=p.bootstrap_servers,
            redis_host=p.redis_host,
            redis_port=p.redis_port,
            state_dir=Path(tmp) / "state",
        )
        featuresets = write_label_featuresets(Path(tmp) / "featuresets")
        (featuresets / "ledger.yaml").write_text(LEDGER)
        env["DRIFTLINE_INGESTION__FEATURESETS_DIR"] = str(featuresets)
        env["DRIFTLINE_FEATURES__FEATURESETS_DIR"] = str(featuresets)
        procs = {s: spawn(s, env, Path(tmp) / f"{s}.log") for s in ("ingestion", "features")}
        pids = {s: proc.pid for s, proc in procs.items()}
        try:
            result = asyncio.run(bench(p.bootstrap_servers, args.rounds))
            result["services_still_running"] = {
                s: proc.poll() is None and proc.pid == pids[s] for s, proc in procs.items()
            }
        except BaseException:
            for s in procs:
                tail = (Path(tmp) / f"{s}.log").read_text(errors="replace").splitlines()[-40:]
                print(f"--- {s}.log (last lines) ---", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    result["note"] = (
        "median over rounds on one partition; 'after hostile' runs from producing the hostile "
        "record to the next valid record's output, 'clean' from producing a valid record to its "
        "output, alternating in the same run"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
