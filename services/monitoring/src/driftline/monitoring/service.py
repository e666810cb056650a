"""Wiring: settings → core, Kafka loop, admin HTTP (metrics, ``/api/timeseries``, dashboard)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from driftline.kafkaio import provision_topics, wait_for_kafka
from driftline.monitoring.dashboard import ChartedMonitorCore, dashboard_snapshot, mount_dashboard
from driftline.monitoring.kafka_loop import KafkaMonitorLoop
from driftline.monitoring.monitor_metrics import MonitorMetrics
from driftline.runtime import Health, build_admin_app, serve_admin
from driftline.security.kafka_auth import kafka_auth
from driftline.settings import PlatformSettings
from driftline.telemetry import ConsumerHealth, ServiceMetrics

log = logging.getLogger(__name__)

__all__ = ["serve"]


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
    async with asyncio.TaskGroup() as tg:
        tg.create_task(serve_admin(app, settings, "monitoring", stop))
        tg.create_task(loop.run(stop))
