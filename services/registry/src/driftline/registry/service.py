"""Wiring: settings → artifact store, core, Kafka log, gRPC server, admin HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from driftline.artifacts import ArtifactStore
from driftline.contracts.errors import UnavailableError
from driftline.contracts.topics import MODELS
from driftline.kafkaio import provision_topics, wait_for_kafka
from driftline.registry.core import RegistryCore
from driftline.registry.event_log import KafkaRegistryLog
from driftline.registry.grpc_api import METHOD_ROLES, RegistryServicer
from driftline.registry.registry_metrics import RegistryMetrics
from driftline.runtime import Health, build_admin_app, serve_admin
from driftline.security import grpc_tls
from driftline.security.auth_files import ROLES_FILE, auth_file
from driftline.security.kafka_auth import kafka_auth
from driftline.security.roles import RoleBook, RoleGuard
from driftline.settings import PlatformSettings
from driftline.telemetry import ConsumerHealth, ServiceMetrics
from driftline.v1 import registry_pb2, registry_pb2_grpc

__all__ = ["RegistryService", "registry_roles", "serve", "start_grpc_server"]

log = logging.getLogger(__name__)

_SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name


class RegistryService:
    """One registry replica; :meth:`start` returns once the log is replayed and gRPC listens.

    Usable in-process (tests, benchmarks) as well as from ``python -m driftline.registry``.
    """

    def __init__(self, settings: PlatformSettings) -> None:
        self.settings = settings
        cfg = settings.registry
        self.metrics = ServiceMetrics("registry")
        self.registry_metrics = RegistryMetrics(self.metrics)
        self.health = Health("registry")
        self.health.set("kafka", False)
        self.health.set("log_replayed", False)
        self.consumer_health = ConsumerHealth(
            self.metrics.registry, stall_after_s=settings.kafka.stall_after_s
        )
        self.kafka_security = kafka_auth(settings.security, "registry")
        self.log = KafkaRegistryLog(
            settings.kafka,
            self.registry_metrics,
            self.consumer_health,
            instance_id=cfg.instance_id,
            security=self.kafka_security,
        )
        self.core = RegistryCore(
            ArtifactStore(cfg.artifact_dir),
            cfg.signing_key,
            self.log.publish,
            write_timeout_s=cfg.write_timeout_s,
            max_artifact_bytes=cfg.max_artifact_bytes,
            featuresets_dir=cfg.featuresets_dir,
        )
        self.registry_metrics.track_champions(lambda: self.core.state)
        self.grpc_port = 0
        """The bound gRPC port (known after :meth:`start`)."""
        self._stop = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Wait for Kafka, provision topics, replay the log, start serving gRPC."""
        kafka = self.settings.kafka
        await wait_for_kafka(kafka, security=self.kafka_security)
        await provision_topics(kafka, security=self.kafka_security)
        self.health.set("kafka", True)
        await self.log.start()
        self._follower = asyncio.create_task(self.log.follow(self.core, self._stop))
        caught_up = asyncio.create_task(self.log.caught_up.wait())
        done, _ = await asyncio.wait(
            {caught_up, self._follower}, return_when=asyncio.FIRST_COMPLETED
        )
        if self._follower in done:
            caught_up.cancel()
            await self.log.stop()
            self._follower.result()  # surfaces the follower's failure
            raise UnavailableError(f"stopped before {MODELS.name} was replayed")
        self.health.set("log_replayed", True)
        self.registry_metrics.versions.set(self.core.state.version_count)
        self.registry_metrics.models.set(len(self.core.state.models))

        cfg = self.settings.registry
        self._server, self.grpc_port = await start_grpc_server(
            self.core, self.metrics, self.settings, self._health_servicer
        )
        log.info(
            "registry ready on %s:%d: %d model(s), %d version(s)",
            cfg.grpc_host,
            self.grpc_port,
            len(self.core.state.models),
            self.core.state.version_count,
        )

    async def wait(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set or the log follower fails (which is re-raised)."""
        assert self._follower is not None, "start() first"
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopper, self._follower}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if self._follower in done:
            self._follower.result()

    async def stop(self) -> None:
        """Stop serving (with a short grace period), the follower and the producer."""
        self._stop.set()
        if self._server is not None:
            await self._health_servicer.enter_graceful_shutdown()
            await self._server.stop(grace=2.0)
            self._server = None
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self.log.stop()


def registry_roles(settings: PlatformSettings) -> RoleGuard | None:
    """The registry's roles, or None for the plaintext registry without a roles file
    (reads open, changes guarded by ``registry.token`` alone).

    The roles file is ``registry.roles_file``, else in secure mode
    ``<credentials_dir>/registry/roles.yaml`` when present, else (secure mode) the
    default identity bindings; ``registry.token``, when set, is an admin token.
    """
    cfg, security = settings.registry, settings.security
    path = auth_file(security, "registry", cfg.roles_file, ROLES_FILE)
    if path is None and not security.enabled:
        return None
    book = RoleBook.load(path) if path is not None else RoleBook.defaults()
    if cfg.token:
        book = book.with_token("registry.token", cfg.token, {"admin"})
    log.info(
        "registry roles from %s: %d certificate identit(ies), %d token(s)",
        path or "the secure-mode defaults",
        len(book.identities),
        len(book.tokens),
    )
    return RoleGuard(
        book, METHOD_ROLES, certificates=security.enabled, open_reads=not security.enabled
    )


async def start_grpc_server(
    core: RegistryCore,
    metrics: ServiceMetrics,
    settings: PlatformSettings,
    health_servicer: Any,
) -> tuple[grpc.aio.Server, int]:
    """Serve the Registry, health and reflection on ``registry.grpc_host:grpc_port``
    (mTLS in secure mode, with roles); the started server and its bound port."""
    cfg = settings.registry
    max_msg = cfg.chunk_bytes * 2 + 1024 * 1024
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max(max_msg, 8 * 1024 * 1024)),
            ("grpc.max_send_message_length", max(max_msg, 8 * 1024 * 1024)),
        ]
    )
    servicer = RegistryServicer(
        core,
        metrics,
        token=cfg.token,
        chunk_bytes=cfg.chunk_bytes,
        roles=registry_roles(settings),
    )
    registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{cfg.grpc_host}:{cfg.grpc_port}"
    port = grpc_tls.add_port(server, address, settings.security, "registry")
    if port == 0:
        raise UnavailableError(f"could not bind the registry's gRPC server to {address}")
    await server.start()
    for name in ("", _SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


async def serve(settings: PlatformSettings, stop: asyncio.Event) -> None:
    """Run the registry until ``stop`` is set."""
    service = RegistryService(settings)
    app = build_admin_app(service.health, service.metrics, title="Driftline registry")
    http = asyncio.create_task(serve_admin(app, settings, "registry", stop))
    try:
        await service.start()
        await service.wait(stop)
    finally:
        stop.set()
        await service.stop()
        await http
