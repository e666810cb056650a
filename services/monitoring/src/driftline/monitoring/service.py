"""Wiring: settings → core, Kafka loop, admin HTTP (metrics, ``/api/timeseries``, dashboard)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import Gauge

from driftline.contracts.errors import UnavailableError
from driftline.contracts.topics import MODELS
from driftline.kafkaio import (
    Leadership,
    group_session,
    make_consumer,
    provision_topics,
    wait_for_kafka,
    work_while_held,
)
from driftline.monitoring.dashboard import ChartedMonitorCore, dashboard_snapshot, mount_dashboard
from driftline.monitoring.kafka_loop import KafkaMonitorLoop
from driftline.monitoring.monitor_metrics import MonitorMetrics
from driftline.runtime import Health, build_admin_app, serve_admin
from driftline.security.kafka_auth import kafka_auth
from driftline.settings import PlatformSettings
from driftline.telemetry import ConsumerHealth, ServiceMetrics

log = logging.getLogger(__name__)

__all__ = ["ActiveMonitor", "serve"]


class ActiveMonitor:
    """Runs the monitor loop only while this replica is the one active monitor.

    Every replica joins group ``<monitoring.consumer_group>-leader`` on ``driftline.models``
    (one partition, paused: the election reads nothing); the holder of its partition
    (:class:`Leadership`) starts the loop, whose transactional producer — one transactional
    id for all replicas — fences the previous active monitor's at the broker, and whose
    epoch the election then prefers.  The others are standbys.  A monitor that loses the
    partition, or whose producer is fenced, stops (:meth:`run` returns why) so that it
    restarts as a standby; the new active monitor's detectors start afresh.
    """

    def __init__(
        self, settings: PlatformSettings, loop: KafkaMonitorLoop, metrics: ServiceMetrics
    ) -> None:
        self.settings = settings
        self.loop = loop
        self.leadership = Leadership(MODELS.name)
        loop.leadership = self.leadership
        self.active = Gauge(
            "driftline_monitoring_active",
            "1 while this replica is the active monitor, 0 while it is a standby",
            registry=metrics.registry,
        )

    async def elect(self, stop: asyncio.Event) -> None:
        """Be a member of the election group until ``stop`` (heartbeats, rebalances)."""
        cfg = self.settings.monitoring
        consumer = make_consumer(
            self.settings.kafka,
            f"monitoring-{cfg.instance_id}-leader",
            group_id=f"{cfg.consumer_group}-leader",
            security=kafka_auth(self.settings.security, "monitoring"),
            partition_assignment_strategy=(self.leadership.assignor(),),
            **group_session(cfg.session_timeout_s),
        )
        self.leadership.consumer = consumer
        consumer.subscribe([MODELS.name], listener=self.leadership)
        await consumer.start()
        try:
            while not stop.is_set():
                await consumer.getmany(timeout_ms=500)  # paused: only group traffic
        finally:
            await consumer.stop()

    async def run(self, stop: asyncio.Event) -> str | None:
        """Wait to become active, monitor while active; ``None`` on ``stop``, else why this
        replica stopped being the active monitor."""
        log.info("standby: waiting to hold the monitoring election's partition")
        ended = await work_while_held(
            self.leadership, stop, self.loop.run, deposed=self.loop.deposed,
            active=self.active.set,
        )  # fmt: skip
        if ended == "deposed":
            return "its producer was fenced: another monitor started under the writer id"
        if ended == "lost":
            return "the election moved to another monitor (this one stopped answering)"
        return None


async def serve(settings: PlatformSettings, stop: asyncio.Event) -> None:
    """Run the monitor until ``stop`` is set; :class:`UnavailableError` if Kafka never answers."""
    cfg = settings.monitoring
    metrics = ServiceMetrics("monitoring")
    monitor_metrics = MonitorMetrics(metrics, concept_detector=cfg.detector.type)
    health = Health("monitoring")
    health.set("kafka", False)
    core = ChartedMonitorCore(cfg)  # first: a bad ``monitoring.detector`` stops it at once
    kafka_security = kafka_auth(settings.security, "monitoring")
    await wait_for_kafka(settings.kafka, security=kafka_security)
    await provision_topics(settings.kafka, security=kafka_security)
    health.set("kafka", True)
    app = build_admin_app(health, metrics, title="Driftline monitoring")

    @app.get("/api/timeseries", tags=["dashboard"], summary="Recent series and markers")
    async def timeseries() -> dict[str, Any]:
        return dashboard_snapshot(core)

    mount_dashboard(app)

    consumers = ConsumerHealth(metrics.registry, stall_after_s=settings.kafka.stall_after_s)
    loop = KafkaMonitorLoop(core, settings, metrics, monitor_metrics, consumers)
    log.info("monitoring ready: admin HTTP on %s:%d", cfg.admin.host, cfg.admin.port)
    active = ActiveMonitor(settings, loop, metrics)
    stepped_down: list[str] = []

    async def monitor() -> None:
        why = await active.run(stop)
        if why is not None:
            stepped_down.append(why)
            stop.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(serve_admin(app, settings, "monitoring", stop))
        tg.create_task(active.elect(stop))
        tg.create_task(monitor())
    if stepped_down:
        raise UnavailableError(
            f"monitoring {cfg.instance_id} is no longer the active monitor ({stepped_down[0]}); "
            "it exits so that it restarts as a standby"
        )
