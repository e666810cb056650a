"""The local platform: the Kafka node and redis-server that ``driftline infra`` manages."""

from __future__ import annotations

import time
from pathlib import Path

from driftline.devtools.infra.component import ComponentStatus, LocalComponent, StartOutcome
from driftline.devtools.infra.errors import InfraError
from driftline.devtools.infra.jars import Progress, _stderr
from driftline.devtools.infra.kafka_node import KafkaNode
from driftline.devtools.infra.process import StopOutcome
from driftline.devtools.infra.redis_node import RedisNode
from driftline.settings import PlatformSettings

__all__ = ["LocalPlatform"]


class LocalPlatform:
    """Kafka + Redis on loopback with state under ``settings.infra.state_dir``.

    ``up`` starts whichever is not running (a running one is reported, never
    duplicated), ``down`` stops exactly the processes named by our pid files,
    ``status`` reports each one.
    """

    def __init__(
        self,
        settings: PlatformSettings,
        *,
        infra_dir: Path | None = None,
        progress: Progress = _stderr,
    ) -> None:
        self.settings = settings
        self.kafka = KafkaNode.from_settings(settings, infra_dir=infra_dir, progress=progress)
        self.redis = RedisNode.from_settings(settings, infra_dir=infra_dir)

    @property
    def components(self) -> list[LocalComponent]:
        """Redis, then Kafka (launched first, since it takes seconds to answer)."""
        return [self.redis, self.kafka]

    def up(self, timeout_s: float | None = None) -> list[StartOutcome]:
        """Start what is not running and wait until everything answers.

        Every port is checked before anything starts; both processes start at
        once and are then waited for.  If one fails, what this call started is
        stopped again and :class:`~driftline.devtools.infra.errors.StartupError` carries
        the log tail of the one that failed.
        """
        timeout = timeout_s if timeout_s is not None else self.settings.infra.ready_timeout_s
        began = time.monotonic()
        running = {c.name: c.running_pid() for c in self.components}
        to_start = [c for c in self.components if running[c.name] is None]
        for component in to_start:
            component.check_ports()
        launched: list[tuple[LocalComponent, int, float]] = []
        outcomes: list[StartOutcome] = []
        try:
            for component in reversed(to_start):  # the slow one (Kafka) first
                t0 = time.monotonic()
                launched.append((component, component.launch(), t0))
            for component, pid, t0 in reversed(launched):
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
        """Stop Kafka, then Redis: only processes recorded in our pid files."""
        return [self.kafka.stop(timeout_s), self.redis.stop(timeout_s)]

    def status(self) -> list[ComponentStatus]:
        """Each component: running or stopped, pid, address, answering or not."""
        return [c.status() for c in self.components]

    def running(self) -> bool:
        """Whether every component is running."""
        return all(c.running_pid() is not None for c in self.components)
