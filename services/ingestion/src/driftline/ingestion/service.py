"""Wiring: settings → core, Kafka loop, HTTP API, admin endpoints."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from driftline.contracts.errors import UnavailableError
from driftline.ingestion.core import IngestionCore
from driftline.ingestion.dedup import RedisDedupStore
from driftline.ingestion.http_api import add_ingest_routes, ingestion_api_keys
from driftline.ingestion.kafka_loop import KafkaIngestLoop
from driftline.ingestion.writer import OutcomeCounters
from driftline.kafkaio import make_producer, provision_topics, wait_for_kafka
from driftline.runtime import Health, build_admin_app, serve_admin, wait_for_redis
from driftline.security.kafka_auth import kafka_auth
from driftline.security.redis_auth import redis_auth, redis_connection
from driftline.settings import PlatformSettings
from driftline.specs import load_featuresets
from driftline.telemetry import ConsumerHealth, ServiceMetrics

log = logging.getLogger(__name__)


async def serve(settings: PlatformSettings, stop: asyncio.Event) -> None:
    """Run ingestion until ``stop`` is set."""
    cfg = settings.ingestion
    catalog = load_featuresets(cfg.featuresets_dir)
    metrics = ServiceMetrics("ingestion")
    health = Health("ingestion")
    counters = OutcomeCounters(metrics.registry)
    health.set("kafka", False)
    health.set("redis", False)

    kafka_security = kafka_auth(settings.security, "ingestion")
    await wait_for_kafka(settings.kafka, security=kafka_security)
    await provision_topics(settings.kafka, security=kafka_security)
    health.set("kafka", True)
    # Secure mode: TLS and the ingestion ACL user (only dl:dedup:*); plaintext otherwise.
    redis_url, secure = redis_connection(settings.redis.url, redis_auth(settings, "ingestion"))
    # A Redis Cluster (redis.cluster): redis-py's cluster client finds the other nodes.
    redis = (RedisCluster if settings.redis.cluster else Redis).from_url(redis_url, **secure)
    try:
        await wait_for_redis(redis.ping, settings.redis)
    except UnavailableError:
        await redis.aclose()
        raise
    health.set("redis", True)

    core = IngestionCore(
        catalog,
        RedisDedupStore(redis, cfg.dedup_window_s),
        max_record_bytes=settings.kafka.max_record_bytes,
    )
    http_producer = make_producer(
        settings.kafka, f"ingestion-http-{cfg.instance_id}", security=kafka_security
    )
    await http_producer.start()
    app = build_admin_app(health, metrics, title="Driftline ingestion")
    add_ingest_routes(
        app,
        core,
        http_producer,
        counters,
        ingestion_api_keys(settings),
        max_body_bytes=settings.kafka.max_message_bytes,
        max_records=cfg.max_records_per_request,
    )
    consumer_health = ConsumerHealth(metrics.registry, stall_after_s=settings.kafka.stall_after_s)
    loop = KafkaIngestLoop(core, settings, metrics, counters, consumer_health)
    log.info(
        "ingestion ready: %d feature set(s) (%s), HTTP on %s:%d",
        len(catalog),
        ", ".join(s.name for s in catalog),
        cfg.admin.host,
        cfg.admin.port,
    )
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_admin(app, settings, "ingestion", stop))
            tg.create_task(loop.run(stop))
    finally:
        await http_producer.stop()
        await redis.aclose()
