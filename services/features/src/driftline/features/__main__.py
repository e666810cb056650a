"""``python -m driftline.features``: the worker, the FeatureStore gRPC server and the admin app.

Builds the online store ``features.online_store`` chooses (exit status 2 naming
the bad setting), waits for Kafka and the store (exit status 3 with one clear line
when either stays unreachable), provisions the declared topics, then runs until
SIGTERM/SIGINT, when it finishes the batch in flight and stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from driftline.features.grpc_server import start_grpc_server
from driftline.features.lookup import OnlineFeatureLookup
from driftline.features.metrics import FeaturesMetrics
from driftline.features.worker import FeaturesWorker
from driftline.kafkaio import provision_topics, wait_for_kafka
from driftline.online_store import create_online_store, wait_until_reachable
from driftline.runtime import Health, build_admin_app, serve_admin, service_main
from driftline.security.kafka_auth import kafka_auth
from driftline.settings import PlatformSettings
from driftline.specs import load_featuresets
from driftline.telemetry import ConsumerHealth

log = logging.getLogger("driftline.features")


async def serve(settings: PlatformSettings, stop: asyncio.Event) -> None:
    """Run the features service until ``stop`` is set."""
    cfg = settings.features
    catalog = load_featuresets(cfg.featuresets_dir)
    metrics = FeaturesMetrics()
    health = Health("features")
    store = create_online_store(settings)
    try:
        kafka_security = kafka_auth(settings.security, "features")
        await wait_for_kafka(settings.kafka, security=kafka_security)
        startup_wait_s = cfg.online_store.startup_wait_s or settings.redis.startup_wait_s
        await wait_until_reachable(store, startup_wait_s)
        health.set("online_store", True)
        created = await provision_topics(settings.kafka, security=kafka_security)
        if created:
            log.info("created topics %s", ", ".join(created))
        admin = build_admin_app(health, metrics)
        http = asyncio.create_task(serve_admin(admin, settings, "features", stop))
        lookup = OnlineFeatureLookup(catalog, store)
        server, port = await start_grpc_server(
            lookup, metrics, cfg.grpc_host, cfg.grpc_port, settings.security
        )
        health.set("grpc", True)
        log.info("FeatureStore gRPC on %s:%d", cfg.grpc_host, port)
        worker = FeaturesWorker(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            replication_factor=settings.kafka.default_replication_factor,
            catalog=catalog,
            store=store,
            metrics=metrics,
            health=health,
            client_id=settings.kafka.client_id,
            max_record_bytes=settings.kafka.max_record_bytes,
            max_message_bytes=settings.kafka.max_message_bytes,
            consumer_health=ConsumerHealth(
                metrics.registry, stall_after_s=settings.kafka.stall_after_s
            ),
            kafka_security=kafka_security,
        )
        # Start-up waits for the changelog topic and the group join; SIGTERM
        # must still be able to end it.
        starting = asyncio.create_task(worker.start())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            log.info("features worker started for %s", ", ".join(s.name for s in catalog))
        done, _ = await asyncio.wait({stopper, http}, return_when=asyncio.FIRST_COMPLETED)
        if http in done:
            stopper.cancel()
            http.result()  # an admin bind failure ends the process with its error
        log.info("stopping")
        health.set("stopping", False)
        if not starting.done():
            starting.cancel()  # stopped during recovery: abandon the start
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        await worker.stop()
        await server.stop(grace=2.0)
        stop.set()
        await http
    finally:
        await store.close()


def main() -> int:
    """Build settings, set up logs and traces, run until SIGTERM; the exit status."""
    # A batch in flight when partitions are revoked finishes and commits first (the
    # chart gives the pod 60 s).
    return service_main(
        "features", serve, quiet_loggers=("aiokafka", "kafka"), shutdown_grace_s=50.0
    )


if __name__ == "__main__":
    sys.exit(main())
