"""Features service benchmark → ``bench/out/features.json``.

Against a real Kafka broker and redis-server started for the run (see
``local_platform.py``), with the service started here as its own process:

1. baseline: raw aiokafka produce + consume of 200-byte JSON records;
2. sustained end-to-end rate: ValidEvents produced → values in Redis (the
   worker counts a vector out only after its batch's Redis write), offered
   faster than the worker can go (12,000/s), with the backlog (produced -
   processed) sampled every second;
3. steady 5,000 events/s for ten minutes: the largest backlog, in seconds of
   input (the consumer-lag bar);
4. freshness at 1,000 events/s: produce → readable through GetOnlineFeatures;
5. GetOnlineFeatures latency over gRPC for 1 and 100 entities, and raw redis-py
   reading the same hashes (the floor).

Usage: ``uv run python bench/bench_features.py [--duration 60] [--lag-duration 600]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from driftline.contracts.messages import ValidEvent
from driftline.contracts.topics import EVENTS_VALID, FEATURES
from driftline.devtools.infra import free_port
from driftline.kafkaio import provision_topics
from driftline.online_store.redis_store import entity_key
from driftline.security import grpc_tls, http_tls
from driftline.settings import load_settings
from driftline.specs import load_featuresets
from driftline.v1 import common_pb2, feature_store_pb2, feature_store_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from local_platform import wait_ready  # noqa: E402 - bench/ holds the helpers
from measure import cpu_seconds, interleaved, pct  # noqa: E402 - bench/ holds the helpers

OUT = ROOT / "bench" / "out" / "features.json"
SECURITY = load_settings().security
"""The bench's clients: plaintext, like the figures, unless the environment
(``DRIFTLINE_SECURITY__ENABLED``, ...) turns secure mode on for the run."""


def event_bytes(i: int, entity: str, rng: random.Random, run: str) -> tuple[bytes, bytes]:
    now = datetime.now(UTC)
    e = ValidEvent(
        event_id=f"b-{run}-{i}",
        entity_id=entity,
        event_time=now,
        featureset="loans",
        featureset_version=1,
        features={
            "salary": rng.uniform(20000, 150000),
            "commission": rng.uniform(0, 85000),
            "age": rng.randint(20, 80),
            "elevel": rng.randint(0, 4),
            "car": rng.randint(1, 20),
            "zipcode": rng.randint(0, 8),
            "hvalue": rng.uniform(0, 1_200_000),
            "hyears": rng.randint(1, 30),
            "loan": rng.uniform(0, 500_000),
        },
        ingested_at=now,
    )
    return entity.encode(), e.model_dump_json().encode()


class EventTemplates:
    """ValidEvent bytes for the sustained phase at a few µs each (the producer shares the CPU).

    One pydantic-built event per entity is the template; the event id and the
    times are substituted into its bytes.
    """

    def __init__(self, entities: list[str], rng: random.Random, run: str) -> None:
        self.parts: list[tuple[bytes, bytes, bytes, bytes]] = []
        for n, entity in enumerate(entities):
            _, raw = event_bytes(n, entity, rng, run)
            data = json.loads(raw)
            marker_id, marker_t = f"@ID{n}@", "@T@"
            data["event_id"], data["event_time"], data["ingested_at"] = (
                marker_id,
                marker_t,
                marker_t,
            )
            text = json.dumps(data, separators=(",", ":"))
            head, rest = text.split(marker_id)
            mid, tail = rest.split(marker_t, 1)
            mid2, tail2 = tail.split(marker_t, 1)
            self.parts.append((head.encode(), mid.encode(), mid2.encode(), tail2.encode()))
        self.run = run

    def make(self, i: int, slot: int, now_iso: bytes) -> bytes:
        head, mid, mid2, tail = self.parts[slot]
        return b"".join((head, f"b-{self.run}-{i}".encode(), mid, now_iso, mid2, now_iso, tail))


async def baseline(bootstrap: str, n: int) -> float:
    """Raw aiokafka produce+consume rate (records/s) of 200-byte JSON records."""
    topic = f"bench.baseline.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, EVENTS_VALID.partitions, 1)])
    await admin.close()
    payload = json.dumps({"k": "x" * 180, "i": 0}).encode()[:200]
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await consumer.start()
    await producer.start()
    got = 0

    async def consume() -> None:
        nonlocal got
        while got < n:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            got += sum(len(r) for r in batches.values())

    t0 = time.perf_counter()
    reader = asyncio.create_task(consume())
    for i in range(n):
        await producer.send(topic, payload, key=str(i % 50).encode())
    await producer.flush()
    await reader
    elapsed = time.perf_counter() - t0
    await producer.stop()
    await consumer.stop()
    return n / elapsed


async def consume_baselines(bootstrap: str, n: int, run: str) -> dict[str, Any]:
    """Consume-only rates over one topic of ``n`` ValidEvents: aiokafka getmany vs a Faust agent.

    Both read the same records from the start and do nothing with them, so the
    difference is the cost of the stream machinery alone.
    """
    topic = f"bench.consume.{run}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, EVENTS_VALID.partitions, 1)])
    await admin.close()
    rng = random.Random(3)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    for i in range(n):
        k, v = event_bytes(i, f"c-{i % 5000}", rng, run)
        await producer.send(topic, v, key=k)
    await producer.flush()
    await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got, t0, cpu0 = 0, 0.0, 0.0
    while got < n:
        batches = await consumer.getmany(timeout_ms=500, max_records=2000)
        if got == 0 and batches:
            t0, cpu0 = time.perf_counter(), cpu_seconds(os.getpid())
        got += sum(len(r) for r in batches.values())
    aiokafka_rate = got / (time.perf_counter() - t0)
    aiokafka_cpu = (cpu_seconds(os.getpid()) - cpu0) / got * 1e6
    await consumer.stop()

    result_file = ROOT / "bench" / "out" / "faust-baseline.json"
    result_file.unlink(missing_ok=True)
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "faust_stream_baseline.py"),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--events",
            str(n),
            "--out",
            str(result_file),
        ],
        capture_output=True,
        timeout=600,
        check=False,
    )
    if not result_file.exists():
        raise SystemExit(f"the Faust baseline wrote no result: {out.stderr.decode()[-2000:]}")
    faust_result = json.loads(result_file.read_text())
    return {
        "events": n,
        "aiokafka_getmany_events_per_s": round(aiokafka_rate, 1),
        "aiokafka_getmany_cpu_us_per_event": round(aiokafka_cpu, 1),
        "faust_take_events_noop_events_per_s": faust_result["events_per_s"],
        "faust_take_events_noop_cpu_us_per_event": faust_result["cpu_us_per_event"],
    }


async def until_idle(admin_port: int) -> None:
    """Return once the worker's written count stops moving (two reads 2 s apart agree)."""
    before = -1
    while (now := processed(admin_port)) != before:
        before = now
        await asyncio.sleep(2)


def processed(*admin_ports: int) -> int:
    """Feature vectors the workers on ``admin_ports`` have written, together."""
    total = 0
    for admin_port in admin_ports:
        url = http_tls.url("127.0.0.1", admin_port, SECURITY, "/metrics")
        context = http_tls.client_context(SECURITY, "admin")
        text = urllib.request.urlopen(url, timeout=5, context=context).read()
        sample = rb'driftline_messages_out_total\{topic="' + FEATURES.name.encode() + rb'"\} '
        m = re.search(sample + rb"([0-9.e+]+)", text)
        total += int(float(m.group(1))) if m else 0
    return total


async def sustained(
    bootstrap: str,
    admin_ports: Sequence[int],
    duration: float,
    rate: int,
    run: str,
    worker_pids: Sequence[int],
) -> dict[str, Any]:
    """Produce at ``rate`` events/s for ``duration`` s; processed rate and backlog over time
    (the workers on ``admin_ports``, members of one group, together)."""
    rng = random.Random(1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    start_count = processed(*admin_ports)
    cpu_start = sum(cpu_seconds(pid) for pid in worker_pids)
    sent = 0
    backlog: list[int] = []
    t0 = time.perf_counter()
    next_sample = t0 + 1
    entities = [f"bench-{run}-{i}" for i in range(5000)]
    keys = [e.encode() for e in entities]
    templates = EventTemplates(entities, rng, run)
    while (now := time.perf_counter()) - t0 < duration:
        due = int((now - t0) * rate)
        now_iso = (
            datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z").encode()
        )
        while sent < due:
            slot = sent % len(entities)
            v = templates.make(sent, slot, now_iso)
            await producer.send(EVENTS_VALID.name, v, key=keys[slot])
            sent += 1
        if now >= next_sample:
            backlog.append(sent - (processed(*admin_ports) - start_count))
            next_sample += 1
        await asyncio.sleep(0.005)
    await producer.flush()
    produced_at = time.perf_counter()
    while processed(*admin_ports) - start_count < sent:
        await asyncio.sleep(0.05)
        if time.perf_counter() - produced_at > 120:
            break
    done = time.perf_counter()
    cpu = sum(cpu_seconds(pid) for pid in worker_pids) - cpu_start
    await producer.stop()
    total = processed(*admin_ports) - start_count
    return {
        "target_rate": rate,
        "events": sent,
        "processed": total,
        "seconds": round(done - t0, 2),
        "events_per_s": round(total / (done - t0), 1),
        "drain_after_produce_s": round(done - produced_at, 2),
        "max_backlog_events": max(backlog) if backlog else 0,
        "max_backlog_s_at_target": round((max(backlog) if backlog else 0) / rate, 2),
        "worker_cpu_us_per_event": round(cpu / max(total, 1) * 1e6, 1),
    }


async def freshness(bootstrap: str, grpc_port: int, seconds: float, run: str) -> dict[str, Any]:
    """At 1,000 events/s, every 20th event's entity is new; time until GetOnlineFeatures sees it."""
    rng = random.Random(2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks="all")
    await producer.start()
    channel = grpc_tls.channel(f"127.0.0.1:{grpc_port}", SECURITY, "admin")
    stub = feature_store_pb2_grpc.FeatureStoreStub(channel)
    lat: list[float] = []

    async def watch(entity: str, sent_at: float) -> None:
        req = feature_store_pb2.GetOnlineFeaturesRequest(
            featureset="loans", entity_ids=[entity], feature_names=["salary"]
        )
        while time.perf_counter() - sent_at < 10:
            resp = await stub.GetOnlineFeatures(req)
            if resp.features[0].status[0] == common_pb2.FEATURE_STATUS_PRESENT:
                lat.append(time.perf_counter() - sent_at)
                return
            await asyncio.sleep(0.002)

    watchers = []
    n = int(seconds * 1000)
    t0 = time.perf_counter()
    for i in range(n):
        target = t0 + i / 1000
        if (d := target - time.perf_counter()) > 0:
            await asyncio.sleep(d)
        entity = f"fresh-{run}-{i}" if i % 20 == 0 else f"bg-{run}-{i % 500}"
        k, v = event_bytes(i, entity, rng, run + "f")
        fut = await producer.send(EVENTS_VALID.name, v, key=k)
        if i % 20 == 0:
            sent_at = time.perf_counter()
            fut.add_done_callback(lambda _f: None)
            watchers.append(asyncio.create_task(watch(entity, sent_at)))
    await asyncio.gather(*watchers)
    await producer.stop()
    await channel.close()
    return {
        "rate": 1000,
        "samples": len(lat),
        "p50_ms": round(statistics.median(lat) * 1000, 2),
        "p99_ms": round(pct(lat, 0.99) * 1000, 2),
    }


async def seed(bootstrap: str, grpc_port: int, entities: list[str], run: str) -> None:
    """Give each of ``entities`` values (one event each) and wait until the store serves them."""
    rng = random.Random(3)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    for i, entity in enumerate(entities):
        k, v = event_bytes(i, entity, rng, run + "r")
        await producer.send(EVENTS_VALID.name, v, key=k)
    await producer.stop()
    channel = grpc_tls.channel(f"127.0.0.1:{grpc_port}", SECURITY, "admin")
    stub = feature_store_pb2_grpc.FeatureStoreStub(channel)
    req = feature_store_pb2.GetOnlineFeaturesRequest(
        featureset="loans", entity_ids=entities, feature_names=["salary"]
    )
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        resp = await stub.GetOnlineFeatures(req)
        if all(s == common_pb2.FEATURE_STATUS_PRESENT for s in resp.features[0].status):
            break
        await asyncio.sleep(0.1)
    else:
        raise SystemExit("the read entities' values did not reach the online store in 60 s")
    await channel.close()


async def reads(
    grpc_port: int, redis_url: str, entities: list[str], names: list[str], n: int
) -> dict[str, dict[str, Any]]:
    """GetOnlineFeatures of ``entities`` (every feature) beside its two floors, in turns.

    - ``grpc_health_check``: the same server's ``grpc.health.v1.Health/Check``
      over the same channel, the cost of one gRPC call in this server and client;
    - ``raw_redis``: redis-py (hiredis) reading the same hashes in-process, one
      pipelined ``HMGET`` per entity, values left as bytes (no parsing, no gRPC).
    """
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from redis.asyncio import Redis

    channel = grpc_tls.channel(f"127.0.0.1:{grpc_port}", SECURITY, "admin")
    stub = feature_store_pb2_grpc.FeatureStoreStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    req = feature_store_pb2.GetOnlineFeaturesRequest(featureset="loans", entity_ids=entities)
    check = health_pb2.HealthCheckRequest()
    redis = Redis.from_url(redis_url)
    keys = [entity_key("loans", e) for e in entities]

    async def raw() -> None:
        pipe = redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, names)
        await pipe.execute()

    result = await interleaved(
        {
            "get_online_features": lambda: stub.GetOnlineFeatures(req),
            "grpc_health_check": lambda: health.Check(check),
            "raw_redis": raw,
        },
        n,
    )
    await redis.aclose()
    await channel.close()
    return {name: {"entities": len(entities), **r} for name, r in result.items()}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    bootstrap = settings.kafka.bootstrap_servers
    await provision_topics(settings.kafka)
    run = uuid.uuid4().hex[:6]
    grpc_port, admin_port = free_port(), free_port()
    env = {
        **os.environ,
        "DRIFTLINE_FEATURES__GRPC_PORT": str(grpc_port),
        "DRIFTLINE_FEATURES__ADMIN__PORT": str(admin_port),
        "DRIFTLINE_FEATURES__FEATURESETS_DIR": str(ROOT / "examples" / "featuresets"),
        "DRIFTLINE_TELEMETRY__LOG_LEVEL": "WARNING",
    }
    log = (ROOT / "bench" / "out" / "features-worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "driftline.features"], env=env, stderr=log)
    try:
        await asyncio.to_thread(
            wait_ready, admin_port, proc, ROOT / "bench" / "out" / "features-worker.log", "features"
        )
        # Let the worker catch up with whatever the topic already holds.
        await until_idle(admin_port)
        base = await baseline(bootstrap, args.baseline_events)
        print(f"baseline {base:,.0f} records/s", flush=True)
        consume = await consume_baselines(bootstrap, args.consume_events, run)
        print(f"consume-only baselines {consume}", flush=True)
        sus = await sustained(bootstrap, [admin_port], args.duration, args.rate, run, [proc.pid])
        print(f"sustained {sus}", flush=True)
        # The lag bar: a steady 5,000 events/s (the floor) for ten minutes.
        lag = await sustained(
            bootstrap, [admin_port], args.lag_duration, args.lag_rate, run + "l", [proc.pid]
        )
        print(f"steady {lag}", flush=True)
        fresh = await freshness(bootstrap, grpc_port, args.freshness_seconds, run)
        print(f"freshness {fresh}", flush=True)
        # Reads of entities that have values, once the worker is idle again.
        ents = [f"bench-{run}-{i}" for i in range(100)]
        await seed(bootstrap, grpc_port, ents, run)
        await until_idle(admin_port)
        names = load_featuresets(ROOT / "examples" / "featuresets").resolve("loans").feature_names
        one = await reads(grpc_port, settings.redis.url, ents[:1], names, 2000)
        hundred = await reads(grpc_port, settings.redis.url, ents, names, 1000)
        print(f"reads {one} {hundred}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine_cores": os.cpu_count(),
        "baseline_aiokafka_records_per_s": round(base, 1),
        "consume_only_baselines": consume,
        "sustained": sus,
        "steady_at_lag_rate": lag,
        "ratio_to_baseline": round(sus["events_per_s"] / base, 3),
        "freshness_at_1000_per_s": fresh,
        "get_online_features_1_entity": one["get_online_features"],
        "get_online_features_100_entities": hundred["get_online_features"],
        "features_per_entity": len(names),
        "raw_redis_1_entity": one["raw_redis"],
        "raw_redis_100_entities": hundred["raw_redis"],
        "grpc_health_check_1_entity": one["grpc_health_check"],
        "grpc_health_check_100_entities": hundred["grpc_health_check"],
        "reads_measured": (
            "in turns (5 rounds) with the same server's Health/Check over the same channel "
            "and redis-py reading the same hashes; entities seeded, worker idle"
        ),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60, help="sustained phase, seconds")
    parser.add_argument(
        "--rate", type=int, default=12000, help="offered events/s in that phase (above capacity)"
    )
    parser.add_argument(
        "--lag-rate", type=int, default=5000, help="steady offered rate of the lag phase"
    )
    parser.add_argument("--lag-duration", type=float, default=600, help="lag phase, seconds")
    parser.add_argument("--baseline-events", type=int, default=200_000)
    parser.add_argument("--consume-events", type=int, default=50_000)
    parser.add_argument("--freshness-seconds", type=float, default=15)
    cli = parser.parse_args()
    from local_platform import local_platform

    with local_platform() as platform:
        os.environ["DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"] = platform.bootstrap_servers
        os.environ["DRIFTLINE_REDIS__HOST"] = platform.redis_host
        os.environ["DRIFTLINE_REDIS__PORT"] = str(platform.redis_port)
        result = asyncio.run(main(cli))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
