"""The serving gRPC server: Predictor, OIP, ``grpc.health.v1`` and server reflection."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from driftline.security import grpc_tls
from driftline.security.api_keys import ApiKeyGuard, ApiKeys
from driftline.security.auth_files import API_KEYS_FILE, auth_file
from driftline.serving.core import ServingCore
from driftline.serving.inference_api import InferenceService
from driftline.serving.predictor_api import PredictorService
from driftline.serving.serving_metrics import ServingMetrics
from driftline.settings import PlatformSettings, SecuritySettings
from driftline.v1 import predictor_pb2, predictor_pb2_grpc
from inference import grpc_service_pb2, grpc_service_pb2_grpc

__all__ = ["SERVICE_NAMES", "ServingServer", "api_key_guard"]

log = logging.getLogger(__name__)

SERVICE_NAMES: tuple[str, ...] = (
    predictor_pb2.DESCRIPTOR.services_by_name["Predictor"].full_name,
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)
"""The application services served (and reported by the health service)."""

ADMIN_METHODS: frozenset[str] = frozenset({"SetCanary"})
"""Methods only a Driftline service's or the admin's certificate may call in secure mode."""


def api_key_guard(settings: PlatformSettings) -> ApiKeyGuard | None:
    """Serving's API-key check (``serving.api_keys_file``, see its docstring), or None when
    every caller is served without one (plaintext mode without a keys file)."""
    security = settings.security
    path = auth_file(security, "serving", settings.serving.api_keys_file, API_KEYS_FILE)
    if path is None and not security.enabled:
        return None
    keys = ApiKeys.load(path, setting="serving.api_keys_file") if path else ApiKeys()
    if not keys:
        log.warning(
            "serving has no API keys (serving.api_keys_file, or %s in its credentials "
            "directory): only Driftline services' and the admin's certificates are served",
            API_KEYS_FILE,
        )
    else:
        log.info("serving accepts %d API key(s) from %s", len(keys), path)
    return ApiKeyGuard(
        keys, service="serving", certificates=security.enabled, admin_methods=ADMIN_METHODS
    )


class ServingServer:
    """A ``grpc.aio`` server with both APIs; health follows :meth:`set_serving`.

    ``security`` makes the port mutual TLS (secure mode); ``keys`` is the API-key check
    every call of both APIs passes (see :func:`api_key_guard`).
    """

    def __init__(
        self,
        core: ServingCore,
        metrics: ServingMetrics,
        *,
        security: SecuritySettings | None = None,
        keys: ApiKeyGuard | None = None,
    ) -> None:
        self._security = security
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        predictor_pb2_grpc.add_PredictorServicer_to_server(
            PredictorService(core, metrics, keys), self.server
        )
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceService(core, metrics, keys), self.server
        )
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = 0

    def bind(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the bound port."""
        self.port = grpc_tls.add_port(self.server, f"{host}:{port}", self._security, "serving")
        if self.port == 0:
            raise OSError(f"cannot bind the serving gRPC port {host}:{port}")
        return self.port

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING (a champion is loaded) or NOT_SERVING on the health service."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def start(self) -> None:
        """Start answering."""
        await self.server.start()

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop, letting in-flight RPCs finish within ``grace_s``."""
        await self.server.stop(grace_s)
