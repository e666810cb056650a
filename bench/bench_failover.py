"""Time to recover after failures on the cluster (issue 19) → ``bench/out/failover.json``.

The scenario of ``tests/integration/cluster/test_cluster_chaos.py`` (the test suite's own
harness, ``tests/support/platform.py``): a three-broker Kafka cluster, a Redis Cluster of
three masters with a replica each, two replicas of every service, loan events with their
labels and a Predict per event streaming in.  It kills, one at a time and never
restarting anything, the broker leading the most partitions, a Redis master, then one
replica of each service (the active trainer and the active monitor among them), and for
each kill measures

- **first event processed**: from the kill to the first event *sent after the kill* whose
  feature vector reaches ``driftline.features`` (ingestion → features, read committed);
- **first Predict answered**: from the kill to the first successful Predict *started after
  the kill* (the client balances round robin over both serving replicas and retries
  UNAVAILABLE).  The stream issues a Predict per event it has sent, so while a broker's
  death holds the event producer back (its partitions' leaders are being elected), no
  Predict starts either: that figure then measures the producer, not serving;
- for the active trainer and the active monitor, **role taken over**: from the kill to the
  standby reporting itself active (``driftline_<service>_active``).

At the end it reports every process's resident memory (RSS) after the run.

    uv run python bench/bench_failover.py [--rate 30] [--settle-events 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from bench_cluster import rss_mb  # noqa: E402 - bench/ holds the helpers
from integration.chaos.chaos_stream import LiveStream, wait_champion  # noqa: E402
from integration.cluster.test_cluster_chaos import (  # noqa: E402 - the test's scenario
    REGISTRY_TOKEN,
    SESSION_S,
)
from support.platform import SERVICES, LivePlatform, fast_loop_env  # noqa: E402

from driftline.contracts.messages import FeatureVector  # noqa: E402
from driftline.contracts.topics import FEATURES  # noqa: E402
from driftline.devtools.infra import KafkaCluster, RedisCluster  # noqa: E402
from driftline.kafkaio import make_consumer  # noqa: E402

OUT = ROOT / "bench" / "out" / "failover.json"
ROLES = {
    "training": "the active trainer",
    "monitoring": "the active monitor",
    "registry": "the registry replica clients try first",
}


class FeatureTail:
    """When each event's feature vector shows up on ``driftline.features``."""

    def __init__(self, platform: LivePlatform) -> None:
        self.platform = platform
        self.seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def _run(self) -> None:
        consumer = make_consumer(
            self.platform.kafka_settings, "bench-failover-tail", FEATURES, group_id=None,
            auto_offset_reset="latest",
        )  # fmt: skip
        await consumer.start()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                now = time.monotonic()
                for records in batch.values():
                    for r in records:
                        with_id = FeatureVector.model_validate_json(r.value)
                        self.seen.setdefault(with_id.event_id, now)
        finally:
            await consumer.stop()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def _recovery(
    stream: LiveStream, tail: FeatureTail, killed: float, timeout_s: float = 120.0
) -> dict[str, float | None]:
    """Seconds from ``killed`` to the first event sent after it that was processed, and to
    the first Predict started after it that was answered."""
    deadline = time.monotonic() + timeout_s
    processed = answered = None
    while (processed is None or answered is None) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if processed is None:
            after = [
                tail.seen[e] for e, t in stream.sent_at.items() if t > killed and e in tail.seen
            ]
            processed = min(after) - killed if after else None
        if answered is None:
            ok = [done for started, done in stream.answered_at if started > killed]
            answered = min(ok) - killed if ok else None
    return {
        "first_event_processed_s": None if processed is None else round(processed, 2),
        "first_predict_answered_s": None if answered is None else round(answered, 2),
    }


async def scenario(platform: LivePlatform, args: argparse.Namespace) -> dict[str, Any]:
    kafka, redis_cluster = platform.kafka, platform.redis
    assert isinstance(kafka, KafkaCluster) and isinstance(redis_cluster, RedisCluster)
    stream = LiveStream(platform, "bench", rate=args.rate, retry_unavailable=True)
    tail = FeatureTail(platform)
    tail.start()
    stream.start()
    recoveries: dict[str, dict[str, float | None]] = {}
    try:
        await wait_champion(platform.registry_target, timeout_s=240)
        await stream.wait_sent(args.settle_events)
        # Until serving has the first champion, Predict answers NOT_FOUND: not a failure.
        failed_before_kills = Counter(stream.predict_failed)

        victim, led = platform.busiest_broker()
        print(f"SIGKILL Kafka node {victim} (leads {led} partitions)", flush=True)
        kafka.node(victim).process.signal(signal.SIGKILL)
        killed = time.monotonic()
        recoveries[f"kafka node leading the most partitions ({led})"] = await _recovery(
            stream, tail, killed
        )
        await stream.wait_sent(args.settle_events)

        master = redis_cluster.masters()[0]
        print(f"SIGKILL Redis master {master.address}", flush=True)
        master.process.signal(signal.SIGKILL)
        killed = time.monotonic()
        recoveries["redis master"] = await _recovery(stream, tail, killed)
        await stream.wait_sent(args.settle_events)

        for service in SERVICES:
            instance = (
                platform.active(service) if service in ("training", "monitoring") else service
            )
            role = ROLES.get(service, "")
            print(f"SIGKILL {instance} {role}".rstrip(), flush=True)
            killed = time.monotonic()
            await asyncio.to_thread(platform.kill, instance)
            name = f"{service} replica" + (f" ({role})" if role else "")
            recoveries[name] = await _recovery(stream, tail, killed)
            if service in ("training", "monitoring"):
                other = service if instance != service else f"{service}-1"
                gauge = f"driftline_{service}_active"
                while platform.metric(other, gauge) != 1 and time.monotonic() - killed < 120:
                    await asyncio.sleep(0.1)
                recoveries[name]["role_taken_over_s"] = round(time.monotonic() - killed, 2)
            await stream.wait_sent(args.settle_events)
    finally:
        await stream.stop()
        await tail.stop()
    rss = {name: rss_mb(pid) for name, pid in platform.pids().items() if pid is not None}
    return {
        "events_sent": stream.sent,
        "predicts_answered": stream.predict_ok,
        "predicts_failed_after_first_champion": dict(stream.predict_failed - failed_before_kills),
        "recoveries": recoveries,
        "rss_mb_after_run": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=30.0, help="events (and Predicts) per s")
    parser.add_argument("--settle-events", type=int, default=60, help="events between kills")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="driftline-bench-failover-") as tmp:
        root = Path(tmp)
        env = fast_loop_env(root, REGISTRY_TOKEN)
        env.update(
            DRIFTLINE_TRAINING__SESSION_TIMEOUT_S=SESSION_S,
            DRIFTLINE_MONITORING__SESSION_TIMEOUT_S=SESSION_S,
        )
        platform = LivePlatform(root, env, cluster=True, replicas=2)
        print("starting 3 Kafka nodes, 6 redis-servers and 12 services…", flush=True)
        try:
            platform.start(timeout_s=240.0)
            result = asyncio.run(scenario(platform, args))
        finally:
            platform.stop()
    report = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine_cores": os.cpu_count(),
        "rate_per_s": args.rate,
        "session_timeout_s": float(SESSION_S),
        **result,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
