"""Wiring: settings -> channels, core, Kafka loops, gRPC server, admin endpoints."""

from __future__ import annotations

import asyncio
import logging
import uuid

from driftline.contracts.topics import PREDICTIONS
from driftline.kafkaio import make_consumer, make_producer, provision_topics, wait_for_kafka
from driftline.runtime import Health, build_admin_app, serve_admin
from driftline.security import grpc_tls
from driftline.security.kafka_auth import kafka_auth
from driftline.serving.canary import CanarySetting
from driftline.serving.core import ServingCore
from driftline.serving.feature_transport import GrpcFeatureSource
from driftline.serving.grpc_server import ServingServer, api_key_guard
from driftline.serving.kafka_loop import ModelFollower, PredictionLogWriter
from driftline.serving.model_source import RegistryModelSource, limit_model_threads
from driftline.serving.model_table import ModelTable
from driftline.serving.prediction_log import PredictionLog
from driftline.serving.serving_metrics import ServingMetrics
from driftline.settings import PlatformSettings
from driftline.telemetry import ConsumerHealth, ServiceMetrics

__all__ = ["serve"]

log = logging.getLogger(__name__)

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


async def serve(settings: PlatformSettings, stop: asyncio.Event) -> None:
    """Run serving until ``stop`` is set.

    Exits (raising :class:`UnavailableError`) when Kafka does not answer within
    its start-up wait; the registry and the feature store may come later:
    until a champion is loaded, RPCs answer UNAVAILABLE and readiness is false.
    """
    cfg = settings.serving
    # Before any model loads: predictions run on this (the event loop's) thread.
    limits = limit_model_threads(cfg.model_threads)
    log.info("model native threads limited to %d (%s)", cfg.model_threads, limits)
    base = ServiceMetrics("serving")
    metrics = ServingMetrics(base)
    health = Health("serving")
    consumers = ConsumerHealth(base.registry, stall_after_s=settings.kafka.stall_after_s)
    health.set("kafka", False)
    health.set("model_loaded", False)

    kafka_security = kafka_auth(settings.security, "serving")
    await wait_for_kafka(settings.kafka, security=kafka_security)
    await provision_topics(settings.kafka, security=kafka_security)
    health.set("kafka", True)

    security = settings.security
    features_channel = grpc_tls.channel(
        cfg.features_target, security, "serving", options=_CHANNEL_OPTIONS
    )
    registry_channel = grpc_tls.channel(
        cfg.registry_target, security, "serving", options=_CHANNEL_OPTIONS
    )
    features = GrpcFeatureSource(
        features_channel, cfg.features_target, stream=cfg.feature_reads == "stream"
    )
    source = RegistryModelSource(
        registry_channel,
        cfg.signing_key or settings.registry.signing_key,
        features,
        target=cfg.registry_target,
        compile_models=cfg.compile_models,
    )
    server: ServingServer | None = None

    def on_change() -> None:
        health.set("model_loaded", table.ready)
        metrics.show_versions(table.loaded_aliases())
        if server is not None:
            asyncio.get_running_loop().create_task(server.set_serving(table.ready))

    table = ModelTable(
        source,
        only=cfg.models,
        pinned_cache_size=cfg.pinned_cache_size,
        canary=CanarySetting(cfg.canary_percent, cfg.canary_alias),
        on_change=on_change,
        on_load=lambda outcome: metrics.model_loads.labels(outcome=outcome).inc(),
    )
    buffer = PredictionLog(
        cfg.prediction_log_buffer,
        on_drop=lambda reason, n: metrics.log_dropped.labels(reason=reason).inc(n),
    )
    core = ServingCore(
        table,
        features,
        buffer,
        policy=cfg.feature_policy,
        policy_by_model=cfg.feature_policy_by_model,
        feature_timeout_s=cfg.feature_timeout_ms / 1000.0,
        max_batch=cfg.max_batch,
    )
    server = ServingServer(core, metrics, security=security, keys=api_key_guard(settings))
    port = server.bind(cfg.grpc_host, cfg.grpc_port)
    await server.set_serving(False)

    instance = uuid.uuid4().hex[:8]
    producer = make_producer(
        settings.kafka, f"serving-predictions-{instance}", security=kafka_security
    )
    consumer = make_consumer(
        settings.kafka, f"serving-models-{instance}", group_id=None, security=kafka_security
    )
    await producer.start()
    await consumer.start()
    await server.start()
    log.info(
        "serving on %s:%d (Predictor, GRPCInferenceService, health, reflection); admin on %s:%d; "
        "predictions to %s",
        cfg.grpc_host,
        port,
        cfg.admin.host,
        cfg.admin.port,
        PREDICTIONS.name,
    )
    follower = ModelFollower(consumer, table, metrics, consumers, retry_s=cfg.registry_retry_s)
    writer = PredictionLogWriter(
        producer,
        buffer,
        metrics,
        batch=cfg.prediction_log_batch,
        max_record_bytes=settings.kafka.max_message_bytes,
    )
    app = build_admin_app(health, base, title="Driftline serving")
    writer_stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_admin(app, settings, "serving", stop))
            tg.create_task(follower.run(stop))
            writer_task = tg.create_task(writer.run(writer_stop))
            await stop.wait()
            await server.set_serving(False)
            await server.stop(2.0)
            writer_stop.set()
            await writer_task
    finally:
        await server.stop(0)
        await consumer.stop()
        await producer.stop()
        await features.close()
        await features_channel.close(None)
        await registry_channel.close(None)
