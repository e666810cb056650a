"""A component made of several processes of one kind: the local Kafka and Redis clusters.

The platform drives it as one component (``start``, ``stop``, ``status``, ``launch``,
``wait_ready``); :attr:`NodeGroup.nodes` are the processes, each a
:class:`~driftline.devtools.infra.component.LocalComponent` of its own (pid file, log,
ports). A subclass says what "answering" means for the whole (a cluster state, a broker
count) and adds its own steps to :meth:`NodeGroup.wait_ready` through
:meth:`NodeGroup.when_nodes_answer`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Generic, TypeVar

from driftline.devtools.infra.component import (
    LocalComponent,
    PortClaim,
    StartOutcome,
)
from driftline.devtools.infra.errors import InfraError
from driftline.devtools.infra.process import StopOutcome

__all__ = ["NodeGroup"]

N = TypeVar("N", bound=LocalComponent)


class NodeGroup(LocalComponent, Generic[N]):
    """Several node processes (of type ``N``) started, stopped and reported as one component."""

    nodes: Sequence[N]

    @property
    def log_file(self) -> Path:
        """The first node's log (each node has its own; ``status`` shows this one)."""
        return self.nodes[0].log_file

    def port_claims(self) -> list[PortClaim]:
        return [claim for node in self.nodes for claim in node.port_claims()]

    def check_ports(self) -> None:
        """Every port of a node that is not running must be free."""
        for node in self.nodes:
            if node.running_pid() is None:
                node.check_ports()

    def prepare(self) -> list[str]:
        raise InfraError(f"{type(self).__name__} launches its nodes itself: call start()")

    def running_pid(self) -> int | None:
        """The first node's pid when every node runs, else None (``up`` starts the rest)."""
        pids = [node.running_pid() for node in self.nodes]
        return pids[0] if all(pid is not None for pid in pids) else None

    def launch(self) -> int:
        """Spawn the nodes that are not running; the first node's pid."""
        pids = [node.running_pid() or node.launch() for node in self.nodes]
        return pids[0]

    def wait_ready(self, timeout_s: float) -> None:
        """Wait for every node, then for :meth:`when_nodes_answer`; on failure every node is
        stopped and the error (with a node's log tail, or the subclass's reason) raised."""
        deadline = time.monotonic() + timeout_s
        try:
            for node in self.nodes:
                node.wait_ready(max(1.0, deadline - time.monotonic()))
            self.when_nodes_answer(deadline, timeout_s)
        except (InfraError, OSError):
            self.stop(timeout_s=10.0)
            raise

    def when_nodes_answer(self, deadline: float, timeout_s: float) -> None:
        """What must hold once each node answers, by ``deadline`` (``time.monotonic``);
        raise :class:`~driftline.devtools.infra.errors.StartupError` if it does not."""

    def start(self, timeout_s: float = 90.0) -> StartOutcome:
        started = time.monotonic()
        pid = self.running_pid()
        if pid is not None and self.answering():
            return StartOutcome(self.name, pid, self.address, True, 0.0)
        self.check_ports()
        pid = self.launch()
        self.wait_ready(timeout_s)
        return StartOutcome(self.name, pid, self.address, False, time.monotonic() - started)

    def stop(self, timeout_s: float = 30.0) -> StopOutcome:
        """Stop every node: all are sent SIGTERM at once (one by one, the last ones would
        wait for a quorum, or fail over to replicas, on the way down), then each is waited
        for."""
        first = self.nodes[0].running_pid()
        for node in self.nodes:
            node.process.signal(signal.SIGTERM)
        outcomes = [node.stop(timeout_s) for node in self.nodes]
        return StopOutcome(
            self.name,
            first if first is not None else next((o.pid for o in outcomes if o.pid), None),
            forced=any(o.forced for o in outcomes),
        )
