"""The local platform ``driftline infra`` manages: Kafka, redis-server and the ops stack."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from driftline.devtools.infra.component import ComponentStatus, LocalComponent, StartOutcome
from driftline.devtools.infra.errors import InfraError
from driftline.devtools.infra.jars import Progress, _stderr
from driftline.devtools.infra.kafka_cluster import KafkaCluster
from driftline.devtools.infra.kafka_node import KafkaNode
from driftline.devtools.infra.ops import OpsStack
from driftline.devtools.infra.pki import WrittenCredentials, write_credentials
from driftline.devtools.infra.process import StopOutcome
from driftline.devtools.infra.redis_cluster import RedisCluster
from driftline.devtools.infra.redis_node import RedisNode
from driftline.kafkaio import provision_topics
from driftline.security.auth_files import write_auth_files
from driftline.security.kafka_auth import kafka_auth
from driftline.settings import PlatformSettings

__all__ = ["LocalPlatform", "provision_platform_topics"]


class LocalPlatform:
    """Kafka + Redis (+ the ops stack) on loopback with state under ``settings.infra.state_dir``.

    ``up`` starts whichever is not running (a running one is reported, never
    duplicated), ``down`` stops exactly the processes named by our pid files,
    ``status`` reports each one. The ops stack (:class:`OpsStack`: Prometheus,
    Alertmanager, the alert sink, Jaeger) is part of it when ``ops`` is true, by
    default when ``infra.ops.enabled``; ``down`` stops it either way.
    """

    def __init__(
        self,
        settings: PlatformSettings,
        *,
        infra_dir: Path | None = None,
        progress: Progress = _stderr,
        ops: bool | None = None,
    ) -> None:
        self.settings = settings
        # One KRaft node, or (infra.kafka_brokers 3) a cluster of three.
        self.kafka: KafkaNode | KafkaCluster = (
            KafkaCluster.from_settings(settings, infra_dir=infra_dir, progress=progress)
            if settings.infra.kafka_brokers == 3
            else KafkaNode.from_settings(settings, infra_dir=infra_dir, progress=progress)
        )
        # One redis-server, or (redis.cluster) six joined into a Redis Cluster.
        self.redis: RedisNode | RedisCluster = (
            RedisCluster.from_settings(settings, infra_dir=infra_dir)
            if settings.redis.cluster
            else RedisNode.from_settings(settings, infra_dir=infra_dir)
        )
        self.ops = OpsStack(settings, infra_dir=infra_dir, progress=progress)
        self.ops_enabled = settings.infra.ops.enabled if ops is None else ops

    @property
    def components(self) -> list[LocalComponent]:
        """Redis, Kafka, then the ops stack when it is enabled."""
        core: list[LocalComponent] = [self.redis, self.kafka]
        return core + self.ops.components if self.ops_enabled else core

    def prepare_credentials(self) -> WrittenCredentials | None:
        """In secure mode, make what is missing of the local credentials (the CA, each
        identity's certificate and secrets: :mod:`~driftline.devtools.infra.pki`) and
        rewrite the registry's roles file and the API keys files from them; None when
        secure mode is off. Existing credentials are kept, so a restart changes nothing."""
        security = self.settings.security
        if not security.enabled:
            return None
        root = security.credentials_dir.expanduser()
        written = write_credentials(root)
        write_auth_files(root)
        return written

    def _launch_order(self, components: list[LocalComponent]) -> list[LocalComponent]:
        """Kafka first (it takes seconds to answer), then the others in their order."""
        return sorted(components, key=lambda c: c is not self.kafka)

    def up(self, timeout_s: float | None = None) -> list[StartOutcome]:
        """Start what is not running and wait until everything answers.

        Every port and executable is checked (and Jaeger built, the first time)
        before anything starts; all processes start at once and are then waited
        for.  If one fails, what this call started is stopped again and
        :class:`~driftline.devtools.infra.errors.StartupError` carries the log tail
        of the one that failed.
        """
        timeout = timeout_s if timeout_s is not None else self.settings.infra.ready_timeout_s
        self.prepare_credentials()
        running = {c.name: c.running_pid() for c in self.components}
        to_start = [c for c in self.components if running[c.name] is None]
        for component in to_start:
            component.check_ports()
        for component in to_start:
            component.fetch()  # a first build or download takes no start-up time
        began = time.monotonic()
        launched: list[tuple[LocalComponent, int, float]] = []
        outcomes: list[StartOutcome] = []
        try:
            for component in self._launch_order(to_start):
                t0 = time.monotonic()
                launched.append((component, component.launch(), t0))
            for component, pid, t0 in launched:
                remaining = max(1.0, timeout - (time.monotonic() - began))
                component.wait_ready(remaining)
                seconds = time.monotonic() - t0
                outcomes.append(
                    StartOutcome(component.name, pid, component.address, False, seconds)
                )
        except (InfraError, OSError, KeyboardInterrupt):
            for component, _, _ in launched:
                component.stop(timeout_s=10.0)
            raise
        for component in self.components:
            found = running[component.name]
            if found is not None:
                outcomes.append(StartOutcome(component.name, found, component.address, True, 0.0))
        order = [c.name for c in self.components]
        return sorted(outcomes, key=lambda o: order.index(o.name))

    def down(self, timeout_s: float = 30.0) -> list[StopOutcome]:
        """Stop the ops stack, then Kafka, then Redis: only processes named by our pid files.

        The ops stack is stopped even when it is not enabled now: it may have been
        started by an earlier ``up``.
        """
        ops = [c.stop(timeout_s) for c in reversed(self.ops.components)]
        # Whichever Redis an earlier ``up`` started (one node or a cluster) is stopped.
        redis = [self.redis.stop(timeout_s)]
        other: RedisNode | RedisCluster | None = None
        if isinstance(self.redis, RedisCluster):
            other = RedisNode.from_settings(self.settings)
        elif not self.settings.security.enabled:  # a cluster never runs secure
            other = RedisCluster.from_settings(self.settings)
        if other is not None and other.running_pid() is not None:
            redis.append(other.stop(timeout_s))
        # Likewise whichever Kafka (one node or the three-node cluster).
        kafka = [self.kafka.stop(timeout_s)]
        other_kafka = self._other_kafka()
        if other_kafka is not None:
            kafka.append(other_kafka.stop(timeout_s))
        return [*ops, *kafka, *redis]

    def _other_kafka(self) -> KafkaNode | KafkaCluster | None:
        """The Kafka these settings do not select (the single node when they select the
        cluster, and the other way round) if any of its processes runs: an earlier ``up``
        with another ``--brokers`` started it."""
        other: KafkaNode | KafkaCluster | None = None
        if isinstance(self.kafka, KafkaCluster):
            other = KafkaNode.from_settings(self.settings)
        elif not self.settings.security.enabled:  # the cluster never runs secure
            with contextlib.suppress(InfraError):  # ports settings that fit no cluster
                other = KafkaCluster.from_settings(self.settings)
        if other is None:
            return None
        # A cluster with a node down still has nodes to stop.
        nodes = other.nodes if isinstance(other, KafkaCluster) else [other]
        return other if any(node.running_pid() is not None for node in nodes) else None

    def status(self) -> list[ComponentStatus]:
        """Each component (an ops one also while disabled if it runs, and the Kafka of an
        earlier ``up --brokers`` that is not the one selected now): state, pid, address."""
        shown = self.components
        shown += [c for c in self.ops.components if c not in shown and c.running_pid()]
        other_kafka = self._other_kafka()
        shown += [other_kafka] if other_kafka is not None else []
        return [c.status() for c in shown]

    def running(self) -> bool:
        """Whether every component is running."""
        return all(c.running_pid() is not None for c in self.components)


def provision_platform_topics(settings: PlatformSettings) -> list[str]:
    """Create every declared topic that is missing, as ``admin`` in secure mode (services
    may not create topics then); the names created."""
    admin = kafka_auth(settings.security, "admin")
    return asyncio.run(provision_topics(settings.kafka, security=admin))
