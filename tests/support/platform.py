"""The whole Driftline platform as OS processes, for tests that break it on purpose.

:class:`LivePlatform` runs a Kafka broker and a redis-server of its own (so no
other test's records or keys leak in: the services replay whole topics) and the
six services as ``python -m driftline.<service>`` subprocesses on free ports,
each in its own session with its log in ``<root>/logs/<service>.log``.  It can
SIGKILL and restart a service, stop and restart the broker on the same ports and
state directory, and read the logs' tails for assertion messages.

With ``cluster=True`` it runs on a three-broker Kafka cluster (topics with three replicas
and ``min.insync.replicas=2``) and a Redis Cluster of three masters with a replica each;
with ``replicas=2`` every service runs twice — the second instance of ``<service>`` is
``<service>-1``, on ports of its own — and the gRPC clients (serving, training, the
tests') are given every replica's address (``ipv4:a,b``: gRPC's ``pick_first`` moves to the
next address when one stops answering).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from driftline.devtools.demo_env import isolated_env
from driftline.devtools.infra import (
    KafkaCluster,
    KafkaNode,
    ManagedProcess,
    RedisCluster,
    RedisNode,
    free_kafka_cluster_ports,
    free_port,
    free_ports,
)
from driftline.devtools.infra.redis_cluster import free_cluster_ports
from driftline.kafkaio import provision_topics
from driftline.settings import KafkaSettings
from driftline.settings.models import InfraSettings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingestion", "features", "training", "registry", "serving", "monitoring")
"""Start order: the registry comes before training and serving would wait for it anyway."""


def metric_value(url: str, name: str) -> float | None:
    """The value of the unlabelled sample ``name`` on the ``/metrics`` page at ``url``;
    None while the page does not answer or has no such sample."""
    try:
        with urllib.request.urlopen(url, timeout=5.0) as response:
            text = response.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2
) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g}s")
        time.sleep(poll_s)


async def await_until(
    condition: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.2
) -> None:
    """:func:`wait_until` for the event loop (``condition`` may return an awaitable)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g}s")
        await asyncio.sleep(poll_s)


class LivePlatform:
    """Kafka, Redis and the six services, each replaceable while the others run."""

    def __init__(
        self,
        root: Path,
        extra_env: Mapping[str, str] | None = None,
        *,
        cluster: bool = False,
        replicas: int = 1,
    ) -> None:
        self.root = root
        infra = InfraSettings()
        self.kafka: KafkaNode | KafkaCluster
        self.redis: RedisNode | RedisCluster
        if cluster:
            ports, controller_ports = free_kafka_cluster_ports()
            self.kafka = KafkaCluster(
                root / "kafka",
                ports=ports,
                controller_ports=controller_ports,
                kafka_version=infra.kafka_version,
                jar_cache=infra.jar_cache,
                infra_dir=ROOT / "infra",
            )
            redis_ports = free_cluster_ports()
            self.redis = RedisCluster(root / "redis", ports=redis_ports, infra_dir=ROOT / "infra")
            redis_port = redis_ports[0]
        else:
            kafka_port, controller_port = free_ports(2)
            self.kafka = KafkaNode(
                root / "kafka",
                port=kafka_port,
                controller_port=controller_port,
                kafka_version=infra.kafka_version,
                jar_cache=infra.jar_cache,
                heap="512m",
                infra_dir=ROOT / "infra",
            )
            self.redis = RedisNode(root / "redis", port=free_port(), infra_dir=ROOT / "infra")
            redis_port = self.redis.port
        self.cluster = cluster
        self.env = isolated_env(
            bootstrap_servers=self.kafka.bootstrap_servers,
            redis_host="127.0.0.1",
            redis_port=redis_port,
            state_dir=root / "state",
        )
        if cluster:
            self.env["DRIFTLINE_REDIS__CLUSTER"] = "true"
            self.env["DRIFTLINE_KAFKA__DEFAULT_REPLICATION_FACTOR"] = "3"
        self.instances = [
            name if i == 0 else f"{name}-{i}" for name in SERVICES for i in range(replicas)
        ]
        """Every service process: ``<service>`` and, with replicas, ``<service>-<i>``."""
        self.admin_ports = {
            name: int(self.env[f"DRIFTLINE_{name.upper()}__ADMIN__PORT"]) for name in SERVICES
        }
        grpc_ports = {
            name: [int(self.env[f"DRIFTLINE_{name.upper()}__GRPC_PORT"])]
            for name in ("features", "registry", "serving")
        }
        self.instance_env: dict[str, dict[str, str]] = {name: {} for name in SERVICES}
        for name in SERVICES:
            for i in range(1, replicas):
                instance, prefix = f"{name}-{i}", f"DRIFTLINE_{name.upper()}__"
                self.admin_ports[instance] = free_port()
                extra = {f"{prefix}ADMIN__PORT": str(self.admin_ports[instance])}
                if name in grpc_ports:
                    grpc_ports[name].append(free_port())
                    extra[f"{prefix}GRPC_PORT"] = str(grpc_ports[name][-1])
                if name not in grpc_ports or name == "registry":
                    extra[f"{prefix}INSTANCE_ID"] = str(i)
                self.instance_env[instance] = extra

        def target(name: str) -> str:
            addresses = [f"127.0.0.1:{port}" for port in grpc_ports[name]]
            return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)

        self.features_target = target("features")
        self.registry_target = target("registry")
        self.serving_target = target("serving")
        self.env["DRIFTLINE_SERVING__FEATURES_TARGET"] = self.features_target
        self.env["DRIFTLINE_SERVING__REGISTRY_TARGET"] = self.registry_target
        self.env["DRIFTLINE_TRAINING__REGISTRY_TARGET"] = self.registry_target
        self.env.update(extra_env or {})
        self.processes = {
            name: ManagedProcess(
                name,
                pid_file=root / "run" / f"{name}.pid",
                log_file=root / "logs" / f"{name}.log",
            )
            for name in self.instances
        }

    # -- whole platform ------------------------------------------------------------------

    @property
    def kafka_settings(self) -> KafkaSettings:
        """Client settings for the platform's broker (or cluster)."""
        return KafkaSettings(
            bootstrap_servers=self.kafka.bootstrap_servers,
            default_replication_factor=3 if self.cluster else 1,
        )

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the broker, Redis, the topics and every service; return once all are ready."""
        self.kafka.start(timeout_s=timeout_s)
        self.redis.start(timeout_s=60.0)
        asyncio.run(provision_topics(self.kafka_settings))
        for name in self.instances:
            self.spawn(name)
        for name in self.instances:
            # Healthy, not ready: serving is ready only once it has a model to serve.
            self.wait_healthy(name, timeout_s)

    def stop(self) -> None:
        """Stop the services (SIGTERM, then SIGKILL; all at once), then Redis and the broker."""
        with ThreadPoolExecutor(len(self.instances)) as pool:
            list(pool.map(lambda p: p.stop(timeout=15.0), self.processes.values()))
        self.redis.stop(timeout_s=10.0)
        self.kafka.stop(timeout_s=20.0)

    # -- one service ---------------------------------------------------------------------

    def spawn(self, name: str) -> int:
        """Start service instance ``name``; return its pid (not waiting for health)."""
        service = name.split("-")[0]
        argv = [sys.executable, "-m", f"driftline.{service}"]
        env = {**self.env, **self.instance_env[name]}
        return self.processes[name].spawn(argv, cwd=ROOT, env=env)

    def pid(self, name: str) -> int | None:
        """The running pid of ``name``, None when it is not running."""
        return self.processes[name].running_pid()

    def pids(self) -> dict[str, int | None]:
        """Every service's running pid."""
        return {name: self.pid(name) for name in self.instances}

    def admin_url(self, name: str, path: str = "/healthz") -> str:
        """``http://127.0.0.1:<admin port><path>`` of service ``name``."""
        return f"http://127.0.0.1:{self.admin_ports[name]}{path}"

    def http_status(self, name: str, path: str = "/healthz") -> int | None:
        """The HTTP status of ``GET path`` on ``name``'s admin port; None if it does not answer."""
        try:
            with urllib.request.urlopen(self.admin_url(name, path), timeout=2.0) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return None

    def metric(self, name: str, sample: str) -> float | None:
        """The value of ``sample`` on instance ``name``'s ``/metrics`` (None if absent)."""
        return metric_value(self.admin_url(name, "/metrics"), sample)

    def active(self, service: str) -> str:
        """The instance of ``service`` (training, monitoring) that is the active one now."""
        gauge = f"driftline_{service}_active"
        found = [i for i in self.instances if i.split("-")[0] == service
                 and self.metric(i, gauge) == 1]  # fmt: skip
        assert len(found) == 1, f"{service}: active instances {found}\n{self.logs(10)}"
        return found[0]

    def busiest_broker(self) -> tuple[int, int]:
        """The cluster node leading the most partitions of the platform's topics (``kcat
        -L``), and how many."""
        assert isinstance(self.kafka, KafkaCluster)
        live = next(n for n in self.kafka.nodes if n.running_pid() is not None)
        done = subprocess.run(
            ["kcat", "-b", live.bootstrap_servers, "-L", "-J", "-m", "10"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        leaders = Counter(
            int(p["leader"])
            for t in json.loads(done.stdout)["topics"]
            if not t["topic"].startswith("__")
            for p in t["partitions"]
        )
        return leaders.most_common(1)[0]

    def wait_healthy(self, name: str, timeout_s: float = 90.0) -> None:
        """Wait for ``/healthz`` → 200; fail with the log's tail if it exits or never answers."""
        self._wait_status(name, "/healthz", timeout_s)

    def wait_ready(self, name: str, timeout_s: float = 90.0) -> None:
        """Wait for ``/readyz`` → 200; fail with the log's tail if it exits or never gets ready."""
        self._wait_status(name, "/readyz", timeout_s)

    def _wait_status(self, name: str, path: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        proc = self.processes[name]
        while self.http_status(name, path) != 200:
            code = proc.exit_code()
            if code is not None:
                raise AssertionError(f"{name} exited with {code}:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name}: no 200 from {path} in {timeout_s:g}s:\n{self.log_tail(name)}"
                )
            time.sleep(0.2)

    def kill(self, name: str) -> int:
        """SIGKILL ``name`` (no chance to clean up) and wait until it is gone; return its pid."""
        proc = self.processes[name]
        pid = proc.running_pid()
        if pid is None:
            raise AssertionError(f"{name} is not running:\n{self.log_tail(name)}")
        proc.signal(signal.SIGKILL)
        wait_until(lambda: proc.exit_code() is not None, 10.0, f"{name} (pid {pid}) to die")
        return pid

    def restart(self, name: str, timeout_s: float = 90.0) -> int:
        """Start ``name`` again after a kill and wait until it is ready; return the new pid."""
        pid = self.spawn(name)
        self.wait_ready(name, timeout_s)
        return pid

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last ``lines`` lines of service ``name``'s log."""
        return self.processes[name].log_tail(lines)

    def log_text(self, name: str) -> str:
        """Service ``name``'s whole log."""
        path = self.processes[name].log_file
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, lines: int = 25) -> str:
        """Every service's log tail, for an assertion message."""
        return "\n".join(f"--- {name}\n{self.log_tail(name, lines)}" for name in self.instances)

    # -- infrastructure faults ------------------------------------------------------------

    def stop_kafka(self) -> None:
        """Stop the broker (the services keep running)."""
        self.kafka.stop(timeout_s=30.0)

    def start_kafka(self, timeout_s: float = 120.0) -> None:
        """Start the broker again on the same ports and state directory."""
        self.kafka.start(timeout_s=timeout_s)


def fast_loop_env(root: Path, registry_token: str) -> dict[str, str]:
    """Settings for a loop that closes within seconds: the demo's model ready for a
    champion after 200 labels instead of 1,000 (its spec written under ``root``), a
    candidate every 300 labels, and a registry that wants ``registry_token`` for changes."""
    models = root / "models"
    models.mkdir(exist_ok=True)
    spec = (ROOT / "examples" / "models" / "loans.yaml").read_text()
    for before, after in (
        ("min_examples: 1000", "min_examples: 200"),
        ("min_eval_examples: 500", "min_eval_examples: 100"),
    ):
        assert before in spec, f"examples/models/loans.yaml no longer has {before!r}"
        spec = spec.replace(before, after)
    (models / "loans.yaml").write_text(spec)
    return {
        "DRIFTLINE_TRAINING__MODELS_DIR": str(models),
        "DRIFTLINE_TRAINING__SNAPSHOT_EVERY": "300",
        "DRIFTLINE_REGISTRY__TOKEN": registry_token,
        "DRIFTLINE_TRAINING__REGISTRY_TOKEN": registry_token,
    }
