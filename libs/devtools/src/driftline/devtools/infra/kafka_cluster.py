"""A local Apache Kafka cluster: three KRaft nodes, each a broker and a controller voter.

``driftline infra up --brokers 3`` runs it instead of the single
:class:`~driftline.devtools.infra.kafka_node.KafkaNode`. Each node is a
:class:`KafkaClusterNode` (a ``KafkaNode`` with its own node id, ports, storage under
``<state dir>/kafka-cluster/node-<id>/`` and ``server.cluster.properties.template``: a
static quorum of the three controllers, ``default.replication.factor=3``,
``min.insync.replicas=2``). The first start formats every node's storage with one shared
cluster id (kept in ``<state dir>/kafka-cluster/cluster-id``); later starts find their
storage formatted. The platform is ready when every node answers and a metadata request
lists three brokers (a node fenced by the controller is not listed).

Clients reach it as ``kafka.bootstrap_servers``: node 1's address suffices (they discover
the others), :attr:`KafkaCluster.bootstrap_servers` lists all three, so a client starting
while node 1 is down still finds the cluster. Losing any one node loses neither the quorum
nor an acknowledged write (``acks=all`` with two replicas in sync). Plaintext only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from driftline.devtools.infra.component import (
    PortClaim,
    StartOutcome,
)
from driftline.devtools.infra.errors import InfraError, StartupError
from driftline.devtools.infra.jars import Progress, _stderr
from driftline.devtools.infra.kafka_node import (
    DEFAULT_JVM_OPTIONS,
    SECURITY_MODE_FILE,
    KafkaNode,
    new_cluster_id,
)
from driftline.devtools.infra.layout import find_infra_dir
from driftline.devtools.infra.node_group import NodeGroup
from driftline.devtools.infra.ports import free_port, parse_host_port
from driftline.devtools.infra.readiness import kafka_answers, kafka_broker_count, poll_until
from driftline.devtools.infra.templates import render_template_file, write_atomic
from driftline.settings import PlatformSettings

__all__ = [
    "CLUSTER_BROKERS",
    "CLUSTER_NODE_HEAP",
    "PORT_STEP",
    "KafkaCluster",
    "KafkaClusterNode",
    "cluster_ports",
    "free_kafka_cluster_ports",
]

CLUSTER_BROKERS = 3
"""Three voters: any one may be lost and two still make a majority (two would survive none)."""

CLUSTER_NODE_HEAP = "384m"
"""Each node's heap unless ``infra.kafka_heap`` is set: three JVMs share a small machine."""

PORT_STEP = 100
"""Default ports of nodes 2 and 3: node 1's client and controller ports + 100 and + 200
(not + 1, + 2…: 9094-9096 are taken by Alertmanager and the alert sink by default)."""


def cluster_ports(first: int, given: Sequence[int] | None = None) -> list[int]:
    """The three nodes' ports: ``given`` (whose first must be ``first``) or ``first`` + 0,
    100, 200.

    >>> cluster_ports(9092)
    [9092, 9192, 9292]
    """
    ports = list(given) if given is not None else [first + i * PORT_STEP for i in range(3)]
    if ports[0] != first:
        raise InfraError(f"node 1 of the Kafka cluster must use port {first}, not {ports[0]}")
    return ports


def free_kafka_cluster_ports(host: str = "127.0.0.1") -> tuple[list[int], list[int]]:
    """Free client ports and free controller ports for the three nodes (tests, benches)."""
    chosen: list[int] = []
    while len(chosen) < 2 * CLUSTER_BROKERS:
        chosen.append(free_port(host, exclude=frozenset(chosen)))
    return chosen[:CLUSTER_BROKERS], chosen[CLUSTER_BROKERS:]


class KafkaClusterNode(KafkaNode):
    """One node of :class:`KafkaCluster`: a plaintext :class:`KafkaNode` whose storage is
    formatted into a static three-voter quorum under ``<state dir>/kafka-cluster/node-<id>/``
    (jars, JVM command, log and readiness are the single node's)."""

    def __init__(
        self,
        state_dir: Path,
        node_id: int,
        *,
        host: str,
        port: int,
        controller_port: int,
        quorum_voters: str,
        cluster_id_file: Path,
        kafka_version: str | None = None,
        jar_cache: Path | None = None,
        heap: str = CLUSTER_NODE_HEAP,
        infra_dir: Path | None = None,
        java: str = "java",
        jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
        progress: Progress = _stderr,
    ) -> None:
        self.name = f"kafka-cluster-{node_id}"
        super().__init__(
            state_dir,
            host=host,
            port=port,
            controller_port=controller_port,
            kafka_version=kafka_version,
            jar_cache=jar_cache,
            heap=heap,
            infra_dir=infra_dir,
            java=java,
            jvm_options=jvm_options,
            progress=progress,
        )
        self.node_id = node_id
        self.quorum_voters = quorum_voters
        self.cluster_id_file = cluster_id_file
        self.node_dir = self.state_dir / "kafka-cluster" / f"node-{node_id}"
        self.data_dir = self.node_dir / "data"
        self.config_file = self.node_dir / "server.properties"
        self.log4j_file = self.node_dir / "log4j2.yaml"
        self.mode_file = self.node_dir / SECURITY_MODE_FILE

    standalone = False  # KafkaCluster.when_nodes_answer checks the coordinators

    def port_claims(self) -> list[PortClaim]:
        return [
            PortClaim(
                self.host,
                self.port,
                f"Kafka cluster node {self.node_id}",
                "DRIFTLINE_INFRA__KAFKA_CLUSTER_PORTS",
            ),
            PortClaim(
                self.host,
                self.controller_port,
                f"the controller of Kafka cluster node {self.node_id}",
                "DRIFTLINE_INFRA__KAFKA_CLUSTER_CONTROLLER_PORTS",
            ),
        ]

    def write_config(self) -> None:
        """Render ``server.cluster.properties.template`` and copy ``log4j2.yaml``."""
        infra = find_infra_dir(self.infra_dir) / "kafka"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        render_template_file(
            infra / "server.cluster.properties.template",
            self.config_file,
            {
                "node_id": self.node_id,
                "quorum_voters": self.quorum_voters,
                "host": self.host,
                "port": self.port,
                "controller_port": self.controller_port,
                "log_dir": self.data_dir,
            },
        )
        write_atomic(self.log4j_file, (infra / "log4j2.yaml").read_text(encoding="utf-8"))

    def _format_identity(self) -> tuple[str, list[str]]:
        """The cluster's shared id; no ``--standalone``: the quorum is the static
        ``controller.quorum.voters`` of the configuration."""
        if not self.cluster_id_file.is_file():
            raise StartupError(
                f"Kafka cluster node {self.node_id}: no cluster id in {self.cluster_id_file} "
                "to format its storage with (KafkaCluster.launch writes it)"
            )
        return self.cluster_id_file.read_text(encoding="utf-8").strip(), []


class KafkaCluster(NodeGroup[KafkaClusterNode]):
    """Three :class:`KafkaClusterNode` processes forming one Kafka cluster.

    It is one component for the platform (``start``, ``stop``, ``status``, ``launch``,
    ``wait_ready`` act on all nodes); :attr:`nodes` are the processes::

        cluster = KafkaCluster(tmp, ports=[p1, p2, p3], controller_ports=[c1, c2, c3])
        cluster.start()
        ... cluster.bootstrap_servers ...   # all three host:port, comma-separated
        cluster.stop()
    """

    name = "kafka-cluster"

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        controller_ports: Sequence[int] | None = None,
        kafka_version: str | None = None,
        jar_cache: Path | None = None,
        heap: str = CLUSTER_NODE_HEAP,
        infra_dir: Path | None = None,
        java: str = "java",
        jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
        progress: Progress = _stderr,
    ) -> None:
        """``ports`` / ``controller_ports``: the nodes' client and controller ports (default
        9092, 9192, 9292 and 9093, 9193, 9293)."""
        super().__init__(state_dir)
        ports = cluster_ports(9092) if ports is None else list(ports)
        controller_ports = (
            cluster_ports(9093) if controller_ports is None else list(controller_ports)
        )
        every = [*ports, *controller_ports]
        if (
            len(ports) != CLUSTER_BROKERS
            or len(controller_ports) != CLUSTER_BROKERS
            or len(set(every)) != len(every)
        ):
            raise InfraError(
                f"a local Kafka cluster needs {CLUSTER_BROKERS} client and {CLUSTER_BROKERS} "
                f"controller ports, all distinct, not {ports} and {controller_ports}"
            )
        self.host = host
        self.cluster_dir = self.state_dir / "kafka-cluster"
        self.cluster_id_file = self.cluster_dir / "cluster-id"
        voters = ",".join(f"{i + 1}@{host}:{cport}" for i, cport in enumerate(controller_ports))
        self.nodes = [
            KafkaClusterNode(
                state_dir,
                i + 1,
                host=host,
                port=port,
                controller_port=cport,
                quorum_voters=voters,
                cluster_id_file=self.cluster_id_file,
                kafka_version=kafka_version,
                jar_cache=jar_cache,
                heap=heap,
                infra_dir=infra_dir,
                java=java,
                jvm_options=jvm_options,
                progress=progress,
            )
            for i, (port, cport) in enumerate(zip(ports, controller_ports, strict=True))
        ]

    @classmethod
    def from_settings(
        cls,
        settings: PlatformSettings,
        *,
        infra_dir: Path | None = None,
        progress: Progress = _stderr,
    ) -> KafkaCluster:
        """The cluster ``driftline infra up --brokers 3`` runs: node 1 at the first address
        of ``kafka.bootstrap_servers`` with ``kafka.controller_port``, nodes 2 and 3 at
        ``infra.kafka_cluster_ports`` / ``infra.kafka_cluster_controller_ports`` (default:
        node 1's ports + 100 and + 200). Secure mode is not supported on it yet."""
        if settings.security.enabled:
            raise InfraError(
                "the local Kafka cluster has no secure mode yet (SASL_SSL listeners, SCRAM "
                "users and ACLs on three nodes): run it with security.enabled false, or use "
                "the single secure broker (`driftline infra up --secure` without --brokers 3)"
            )
        infra = settings.infra
        host, port = parse_host_port(settings.kafka.bootstrap_servers)
        try:
            ports = cluster_ports(port, infra.kafka_cluster_ports)
            controller_ports = cluster_ports(
                settings.kafka.controller_port, infra.kafka_cluster_controller_ports
            )
        except InfraError as exc:
            raise InfraError(
                "infra.kafka_cluster_ports / infra.kafka_cluster_controller_ports must start "
                "with the port of kafka.bootstrap_servers and kafka.controller_port (node 1, "
                f"the node clients are given): {exc.message}"
            ) from None
        heap = infra.kafka_heap if "kafka_heap" in infra.model_fields_set else CLUSTER_NODE_HEAP
        return cls(
            infra.state_dir,
            host=host,
            ports=ports,
            controller_ports=controller_ports,
            kafka_version=infra.kafka_version,
            jar_cache=infra.jar_cache,
            heap=heap,
            infra_dir=infra_dir,
            progress=progress,
        )

    # -- what clients see -------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        """Every node's ``host:port``, comma-separated (what clients bootstrap from)."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def address(self) -> str:
        return self.bootstrap_servers

    def node(self, node_id: int) -> KafkaClusterNode:
        """The node whose ``node.id`` (the broker id metadata reports) is ``node_id``."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise InfraError(f"the Kafka cluster has no node {node_id}")

    def live_brokers(self, timeout_s: float = 2.0) -> int:
        """Brokers a metadata request lists now (unfenced ones): 3 when the cluster is whole."""
        return kafka_broker_count(self.bootstrap_servers, timeout_s)

    # -- LocalComponent ---------------------------------------------------------------------
    def fetch(self) -> Path | None:
        """The jars (one Maven fetch for all three nodes)."""
        return self.nodes[0].libs_dir()

    def answering(self) -> bool:
        """Every node answers a metadata request and the cluster lists all three brokers."""
        return (
            all(kafka_answers(node.bootstrap_servers) for node in self.nodes)
            and self.live_brokers() == CLUSTER_BROKERS
        )

    def _ensure_cluster_id(self) -> None:
        """A new cluster id when no node is formatted yet; the kept one otherwise (a node
        whose storage was removed rejoins the others)."""
        if not any(node.formatted for node in self.nodes):
            write_atomic(self.cluster_id_file, new_cluster_id() + "\n")
        elif not all(node.formatted for node in self.nodes) and not self.cluster_id_file.is_file():
            raise StartupError(
                f"some nodes of the Kafka cluster under {self.cluster_dir} are formatted and "
                f"others not, and {self.cluster_id_file} is gone: remove {self.cluster_dir} "
                "(its topics and records go with it) to start afresh"
            )

    def launch(self) -> int:
        """Spawn the nodes that are not running (storage formatted first if new); node 1's pid."""
        self._ensure_cluster_id()
        return super().launch()

    def when_nodes_answer(self, deadline: float, timeout_s: float) -> None:
        """The metadata lists three brokers (none fenced), then the transaction and group
        coordinators answer (:meth:`KafkaNode.check_coordinators`)."""
        if not poll_until(
            lambda: self.live_brokers() == CLUSTER_BROKERS, max(1.0, deadline - time.monotonic())
        ):
            raise StartupError(
                f"the Kafka cluster listed {self.live_brokers()} of {CLUSTER_BROKERS} "
                f"brokers after {timeout_s:g}s; see the logs under {self.state_dir / 'logs'}"
            )
        self.nodes[0].check_coordinators(max(1.0, deadline - time.monotonic()))

    def start(self, timeout_s: float = 120.0) -> StartOutcome:
        return super().start(timeout_s)
