"""A local Redis Cluster: six real ``redis-server`` processes, three masters with a replica each.

``driftline infra up --redis-cluster`` runs it instead of the single
:class:`~driftline.devtools.infra.redis_node.RedisNode`. Each node is a
:class:`RedisClusterNode` (the single node's ``redis.conf``, append-only file on, plus
``cluster-enabled yes``, its own ``nodes.conf`` and a short ``cluster-node-timeout``, so
a dead master's replica takes over within seconds) with its state under
``<state dir>/redis-cluster/node-<i>/``. The first start joins them with ``redis-cli
--cluster create … --cluster-replicas 1``; later starts find the cluster in each node's
``nodes.conf`` and it forms again by itself. The platform is ready when every node says
``cluster_state:ok``.

Clients reach it as ``redis.host`` / ``redis.port`` (the first node) with
``redis.cluster: true``: they discover the other nodes from it. Each node's cluster bus
listens on its port + 10000.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from driftline.devtools.infra.component import (
    LocalComponent,
    PortClaim,
)
from driftline.devtools.infra.errors import InfraError, StartupError
from driftline.devtools.infra.layout import find_infra_dir
from driftline.devtools.infra.node_group import NodeGroup
from driftline.devtools.infra.ports import free_port, port_is_free
from driftline.devtools.infra.readiness import poll_until, redis_answers, redis_cluster_ok
from driftline.devtools.infra.templates import render_template_file, write_atomic
from driftline.devtools.infra.tools import require_tool
from driftline.settings import PlatformSettings

__all__ = [
    "BUS_PORT_OFFSET",
    "CLUSTER_NODES",
    "RedisCluster",
    "RedisClusterNode",
    "free_cluster_ports",
]

CLUSTER_NODES = 6
"""Three masters and one replica of each."""

BUS_PORT_OFFSET = 10_000
"""A node's cluster bus (node-to-node gossip and failover) listens on its port + this."""

NODE_TIMEOUT_MS = 2000
"""``cluster-node-timeout``: how long a master may be unreachable before it is failed
over (Redis' default of 15 s would keep its slots unavailable that long)."""


def free_cluster_ports(count: int = CLUSTER_NODES, host: str = "127.0.0.1") -> list[int]:
    """``count`` ports free on ``host`` whose cluster bus ports (+ 10000) are free too."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = free_port(host, exclude=frozenset(chosen))
        bus = port + BUS_PORT_OFFSET
        if bus <= 65535 and port_is_free(host, bus) and bus not in chosen:
            chosen.append(port)
    return chosen


class RedisClusterNode(LocalComponent):
    """One ``redis-server`` of the cluster (``cluster-enabled yes``), state in ``node_dir``."""

    def __init__(
        self,
        state_dir: Path,
        index: int,
        *,
        host: str,
        port: int,
        executable: str = "redis-server",
        infra_dir: Path | None = None,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
    ) -> None:
        self.name = f"redis-cluster-{index}"
        super().__init__(state_dir)
        self.index = index
        self.host = host
        self.port = port
        self.executable = executable
        self.infra_dir = infra_dir
        self.node_timeout_ms = node_timeout_ms
        self.node_dir = self.state_dir / "redis-cluster" / f"node-{index}"
        self.data_dir = self.node_dir / "data"
        self.config_file = self.node_dir / "redis.conf"
        self.cluster_config_file = self.node_dir / "cluster.conf"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def port_claims(self) -> list[PortClaim]:
        setting = "DRIFTLINE_INFRA__REDIS_CLUSTER_PORTS"
        return [
            PortClaim(self.host, self.port, f"Redis Cluster node {self.index}", setting),
            PortClaim(
                self.host,
                self.port + BUS_PORT_OFFSET,
                f"the cluster bus of Redis Cluster node {self.index}",
                setting,
            ),
        ]

    def answering(self) -> bool:
        return redis_answers(self.host, self.port)

    def prepare(self) -> list[str]:
        executable = require_tool(self.executable, setting="DRIFTLINE_INFRA__REDIS_SERVER")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        infra = find_infra_dir(self.infra_dir) / "redis"
        # nodes.conf (the node's id, epoch and view of the cluster) is Redis' own file,
        # kept in the data directory with the append-only file.
        write_atomic(
            self.cluster_config_file,
            "# Written by driftline.devtools.infra (RedisClusterNode); included by redis.conf.\n"
            "cluster-enabled yes\n"
            "cluster-config-file nodes.conf\n"
            f"cluster-node-timeout {self.node_timeout_ms}\n",
        )
        render_template_file(
            infra / "redis.conf.template",
            self.config_file,
            {
                "host": self.host,
                "port": self.port,
                "data_dir": self.data_dir,
                "pidfile": self.node_dir / "redis-server.pid",
                # The template's one include slot (secure mode's, otherwise empty).
                "secure_include": f'include "{self.cluster_config_file}"',
            },
        )
        return [executable, str(self.config_file)]


class RedisCluster(NodeGroup[RedisClusterNode]):
    """Six :class:`RedisClusterNode` processes joined into one Redis Cluster.

    It is one component for the platform (``start``, ``stop``, ``status``, ``launch``,
    ``wait_ready`` act on all nodes); :attr:`nodes` are the processes.
    """

    name = "redis-cluster"

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        ports: list[int] | None = None,
        executable: str = "redis-server",
        cli: str = "redis-cli",
        infra_dir: Path | None = None,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
    ) -> None:
        """``ports``: the six nodes' ports (default 6379..6384)."""
        super().__init__(state_dir)
        ports = ports if ports is not None else [6379 + i for i in range(CLUSTER_NODES)]
        if len(ports) != CLUSTER_NODES or len(set(ports)) != CLUSTER_NODES:
            raise InfraError(
                f"a local Redis Cluster needs {CLUSTER_NODES} distinct ports, not {ports}"
            )
        self.host = host
        self.cli = cli
        self.nodes = [
            RedisClusterNode(
                state_dir,
                i,
                host=host,
                port=port,
                executable=executable,
                infra_dir=infra_dir,
                node_timeout_ms=node_timeout_ms,
            )
            for i, port in enumerate(ports)
        ]

    @classmethod
    def from_settings(
        cls, settings: PlatformSettings, *, infra_dir: Path | None = None
    ) -> RedisCluster:
        """The cluster ``driftline infra up --redis-cluster`` runs: its first node at
        ``redis.host:redis.port``, the others at ``infra.redis_cluster_ports`` (default:
        the five ports after ``redis.port``). Secure mode is not supported on it yet."""
        if settings.security.enabled:
            raise InfraError(
                "the local Redis Cluster has no secure mode yet (TLS on the cluster bus and "
                "replication, ACL users on every node): run it with security.enabled false, "
                "or use the single secure redis-server (`driftline infra up --secure`)"
            )
        port = settings.redis.port
        ports = settings.infra.redis_cluster_ports or [port + i for i in range(CLUSTER_NODES)]
        if ports[0] != port:
            raise InfraError(
                f"infra.redis_cluster_ports must start with redis.port ({port}), the node "
                f"clients are given, not {ports[0]}"
            )
        return cls(
            settings.infra.state_dir,
            host=settings.redis.host,
            ports=ports,
            executable=settings.infra.redis_server,
            cli=settings.infra.redis_cli,
            infra_dir=infra_dir,
        )

    # -- what clients see -------------------------------------------------------------------
    @property
    def address(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def url(self) -> str:
        """``redis://host:port/0`` of the first node (clients discover the others)."""
        return f"redis://{self.host}:{self.nodes[0].port}/0"

    def client(self, node: RedisClusterNode) -> redis.Redis:
        """A plain client of one node (an outside view: ``CLUSTER INFO``, ``DBSIZE``…)."""
        return redis.Redis(host=node.host, port=node.port, socket_timeout=5.0)

    def masters(self) -> list[RedisClusterNode]:
        """The nodes that are masters now (as the first answering node sees it)."""
        by_address = {node.address: node for node in self.nodes}
        for node in self.nodes:
            if node.running_pid() is None:
                continue
            client = self.client(node)
            try:
                view: dict[str, dict[str, Any]] = client.cluster("NODES")  # parsed by redis-py
            except (redis.RedisError, OSError):
                continue
            finally:
                client.close()
            found = []
            for address, about in view.items():
                flags = str(about.get("flags", "")).split(",")
                failing = any(flag.startswith("fail") for flag in flags)  # fail, fail?
                if "master" in flags and not failing and address in by_address:
                    found.append(by_address[address])
            return sorted(found, key=lambda n: n.index)
        raise InfraError("no node of the Redis Cluster answered CLUSTER NODES")

    # -- LocalComponent ---------------------------------------------------------------------
    def answering(self) -> bool:
        """Every node says ``cluster_state:ok``, and there are three masters, each with a
        replica connected (right after ``--cluster create`` the state is ok while the
        replicas are still masters of no slots)."""
        if not all(redis_cluster_ok(node.host, node.port) for node in self.nodes):
            return False
        try:
            masters = self.masters()
        except InfraError:
            return False
        return len(masters) == CLUSTER_NODES // 2 and all(
            self._connected_replicas(m) >= 1 for m in masters
        )

    def _connected_replicas(self, node: RedisClusterNode) -> int:
        client = self.client(node)
        try:
            info = client.info("replication")
        except (redis.RedisError, OSError):
            return 0
        finally:
            client.close()
        return int(info.get("connected_slaves", 0))

    def when_nodes_answer(self, deadline: float, timeout_s: float) -> None:
        """Create the cluster on the first start, then wait until every node says
        ``cluster_state:ok`` (with redis-cli's output when the creation fails)."""
        if not any(self._slots_assigned(node) for node in self.nodes):
            self._create(max(1.0, deadline - time.monotonic()))
        if not poll_until(self.answering, max(1.0, deadline - time.monotonic())):
            states = ", ".join(
                f"{n.address}: {self._info(n).get('cluster_state', '?')}" for n in self.nodes
            )
            raise StartupError(
                f"the Redis Cluster did not reach cluster_state:ok within {timeout_s:g}s "
                f"({states}); see the logs under {self.state_dir / 'logs'}"
            )

    def _info(self, node: RedisClusterNode) -> dict[str, str]:
        client = self.client(node)
        try:
            info = client.cluster("INFO")  # parsed by redis-py into a dict
        except (redis.RedisError, OSError):
            return {}
        finally:
            client.close()
        return {str(k): str(v) for k, v in info.items()} if isinstance(info, dict) else {}

    def _slots_assigned(self, node: RedisClusterNode) -> bool:
        return int(self._info(node).get("cluster_slots_assigned", "0")) > 0

    def _create(self, timeout_s: float) -> None:
        """``redis-cli --cluster create``: masters and replicas, slots split in three."""
        cli = require_tool(self.cli, setting="DRIFTLINE_INFRA__REDIS_CLI")
        argv = [
            cli,
            "--cluster",
            "create",
            *(node.address for node in self.nodes),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise StartupError(f"`{' '.join(argv)}` did not finish within {timeout_s:g}s") from exc
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            output = (done.stdout + done.stderr).strip().splitlines()[-20:]
            raise StartupError(
                f"`{' '.join(argv)}` failed (exit status {done.returncode}):\n" + "\n".join(output)
            )
