"""Scale-out figures (issue 19) → ``bench/out/cluster.json``.

In one run, on the same machine, for two kinds of infrastructure started here:

- **single**: one Kafka broker (KRaft) and one redis-server, as ``driftline up`` runs them;
- **cluster**: three Kafka KRaft nodes (topics with three replicas, ``min.insync.replicas=2``)
  and a Redis Cluster of three masters with a replica each (``--brokers 3 --redis-cluster``);

it measures

1. the features worker's sustained rate (ValidEvents produced → values in Redis), offered
   faster than it can go (the features bench's phase, :func:`bench_features.sustained`),
   with **one** worker and with **two** workers of one consumer group;
2. Predict at concurrency 16 with its feature fetch (the serving bench's stack and load:
   features, registry and serving as processes, one signed champion, online values for
   1,000 entities), requests/s;
3. each of those processes' resident memory (RSS) after its sustained phase.

Two cores bound what two workers (and three brokers) can show: the report says so beside
the figures.  Recovery times after failures come from
``tests/integration/cluster/test_cluster_chaos.py``, which prints them.

    uv run python bench/bench_cluster.py [--seconds 30] [--rate 20000] [--predict-seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_features import processed, sustained  # noqa: E402 - bench/ holds the helpers
from bench_serving import (  # noqa: E402
    SIGNING_KEY,
    fill_online_store,
    start_serving_stack,
    throughput,
)
from local_platform import serving_stack_env, stop_processes, wait_ready  # noqa: E402

from driftline.devtools.infra import (  # noqa: E402
    KafkaCluster,
    KafkaNode,
    RedisCluster,
    RedisNode,
    free_kafka_cluster_ports,
    free_port,
)
from driftline.devtools.infra.redis_cluster import free_cluster_ports  # noqa: E402
from driftline.kafkaio import provision_topics  # noqa: E402
from driftline.settings import InfraSettings, KafkaSettings  # noqa: E402

OUT = ROOT / "bench" / "out" / "cluster.json"


@dataclass
class Infra:
    """A running Kafka (node or cluster) and Redis (node or cluster)."""

    kind: str
    bootstrap: str
    redis_port: int
    cluster: bool

    @property
    def env(self) -> dict[str, str]:
        """What a service needs to use it."""
        env = {
            "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "DRIFTLINE_REDIS__HOST": "127.0.0.1",
            "DRIFTLINE_REDIS__PORT": str(self.redis_port),
        }
        if self.cluster:
            env["DRIFTLINE_REDIS__CLUSTER"] = "true"
            env["DRIFTLINE_KAFKA__DEFAULT_REPLICATION_FACTOR"] = "3"
        return env

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=self.bootstrap, default_replication_factor=3 if self.cluster else 1
        )


@contextlib.contextmanager
def infrastructure(kind: str, root: Path) -> Iterator[Infra]:
    """Start ``single`` or ``cluster`` infrastructure under ``root``; stop it afterwards."""
    settings = InfraSettings()
    kafka: KafkaNode | KafkaCluster
    redis: RedisNode | RedisCluster
    if kind == "cluster":
        ports, controller_ports = free_kafka_cluster_ports()
        kafka = KafkaCluster(
            root / "kafka", ports=ports, controller_ports=controller_ports,
            kafka_version=settings.kafka_version, jar_cache=settings.jar_cache,
            infra_dir=ROOT / "infra",
        )  # fmt: skip
        redis_ports = free_cluster_ports()
        redis = RedisCluster(root / "redis", ports=redis_ports, infra_dir=ROOT / "infra")
        redis_port = redis_ports[0]
    else:
        kafka = KafkaNode(
            root / "kafka", port=free_port(), controller_port=free_port(),
            kafka_version=settings.kafka_version, jar_cache=settings.jar_cache,
            heap="512m", infra_dir=ROOT / "infra",
        )  # fmt: skip
        redis = RedisNode(root / "redis", port=free_port(), infra_dir=ROOT / "infra")
        redis_port = redis.port
    print(f"[{kind}] starting Kafka and Redis…", flush=True)
    kafka.start(timeout_s=180.0)
    redis.start(timeout_s=60.0)
    try:
        infra = Infra(kind, kafka.bootstrap_servers, redis_port, kind == "cluster")
        asyncio.run(provision_topics(infra.kafka))
        yield infra
    finally:
        redis.stop(timeout_s=15.0)
        kafka.stop(timeout_s=30.0)


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (``VmRSS`` of /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def features_phase(
    infra: Infra, workers: int, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    """``workers`` features workers of one group, offered ``args.rate`` events/s."""
    procs: list[subprocess.Popen[bytes]] = []
    admin_ports = [free_port() for _ in range(workers)]
    log = logs / f"features-{infra.kind}-{workers}.log"
    try:
        with log.open("ab") as out:
            for port in admin_ports:
                env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
                env.update(
                    infra.env,
                    DRIFTLINE_FEATURES__GRPC_PORT=str(free_port()),
                    DRIFTLINE_FEATURES__ADMIN__PORT=str(port),
                    DRIFTLINE_FEATURES__FEATURESETS_DIR=str(ROOT / "examples" / "featuresets"),
                    DRIFTLINE_TELEMETRY__LOG_LEVEL="WARNING",
                )
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "driftline.features"],
                        env=env,
                        stdout=out,
                        stderr=out,
                    )
                )
        for port, proc in zip(admin_ports, procs, strict=True):
            wait_ready(port, proc, log, "features")
        # Every worker owns partitions before the load starts.
        time.sleep(5.0)
        before = -1
        while (now := processed(*admin_ports)) != before:
            before = now
            time.sleep(2)
        print(f"[{infra.kind}] {workers} features worker(s): offering {args.rate}/s for "
              f"{args.seconds:g} s…", flush=True)  # fmt: skip
        run = uuid.uuid4().hex[:6]
        result = asyncio.run(
            sustained(
                infra.bootstrap, admin_ports, args.seconds, args.rate, run, [p.pid for p in procs]
            )
        )
        result["rss_mb"] = [rss_mb(p.pid) for p in procs]
        print(f"[{infra.kind}] {workers} worker(s): {result['events_per_s']:,.0f} events/s, "
              f"RSS {result['rss_mb']} MB", flush=True)  # fmt: skip
        return result
    finally:
        stop_processes(procs)


def predict_phase(infra: Infra, args: argparse.Namespace, logs: Path, root: Path) -> dict[str, Any]:
    """Predict at concurrency 16 through serving → features (→ Redis) on ``infra``."""
    features, registry, serving = (
        (free_port(), free_port()), (free_port(), free_port()), (free_port(), free_port())
    )  # fmt: skip
    env = serving_stack_env(
        bootstrap=infra.bootstrap, redis_port=infra.redis_port, features=features,
        registry=registry, serving=serving, artifact_dir=root / f"artifacts-{infra.kind}",
        signing_key=SIGNING_KEY,
    )  # fmt: skip
    env.update(infra.env)
    procs: list[subprocess.Popen[bytes]] = []
    log = logs / f"serving-stack-{infra.kind}.log"

    async def run() -> dict[str, Any]:
        with log.open("ab") as out:
            _, started = await start_serving_stack({"serving": env}, log, out, procs)
        await fill_online_store(f"redis://127.0.0.1:{infra.redis_port}/0", cluster=infra.cluster)
        target = f"127.0.0.1:{serving[0]}"
        pid = started["serving"].pid
        await throughput(target, 16, 3.0, pid)  # warm-up: models, channels, caches
        print(f"[{infra.kind}] Predict c=16 for {args.predict_seconds:g} s…", flush=True)
        result = await throughput(target, 16, args.predict_seconds, pid)
        names = ("registry", "features", "serving")
        result["rss_mb"] = {name: rss_mb(p.pid) for name, p in zip(names, procs, strict=True)}
        return result

    try:
        result = asyncio.run(run())
        print(f"[{infra.kind}] Predict c=16: {result['requests_per_s']:,.0f} req/s, "
              f"p99 {result['p99_ms']} ms, errors {result['errors']}", flush=True)  # fmt: skip
        return result
    finally:
        stop_processes(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30, help="each sustained phase")
    parser.add_argument("--rate", type=int, default=20000, help="offered events/s (above capacity)")
    parser.add_argument("--predict-seconds", type=float, default=15)
    args = parser.parse_args()
    logs = ROOT / "bench" / "out"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="driftline-bench-cluster-") as tmp:
        for kind in ("single", "cluster"):
            root = Path(tmp) / kind
            with infrastructure(kind, root) as infra:
                results[kind] = {
                    "features_1_worker": features_phase(infra, 1, args, logs),
                    "features_2_workers": features_phase(infra, 2, args, logs),
                    "predict_c16": predict_phase(infra, args, logs, root),
                }
    single, cluster = results["single"], results["cluster"]

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else 0.0

    report = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine_cores": os.cpu_count(),
        **results,
        "ratios_cluster_to_single": {
            "features_1_worker": ratio(
                cluster["features_1_worker"]["events_per_s"],
                single["features_1_worker"]["events_per_s"],
            ),
            "features_2_workers": ratio(
                cluster["features_2_workers"]["events_per_s"],
                single["features_2_workers"]["events_per_s"],
            ),
            "predict_c16": ratio(
                cluster["predict_c16"]["requests_per_s"], single["predict_c16"]["requests_per_s"]
            ),
        },
        "ratios_2_workers_to_1": {
            kind: ratio(
                results[kind]["features_2_workers"]["events_per_s"],
                results[kind]["features_1_worker"]["events_per_s"],
            )
            for kind in results
        },
        "limits": (
            f"{os.cpu_count()} cores run the load generator, the workers, the Kafka nodes and "
            "the Redis nodes together: a second worker competes with the first for the same "
            "cores, and three brokers (each writing every record three times) with both."
        ),
    }
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
