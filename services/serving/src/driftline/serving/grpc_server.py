"""The serving gRPC server: Predictor, OIP, ``grpc.health.v1`` and server reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from driftline.serving.core import ServingCore
from driftline.serving.inference_api import InferenceService
from driftline.serving.predictor_api import PredictorService
from driftline.serving.serving_metrics import ServingMetrics
from driftline.v1 import predictor_pb2, predictor_pb2_grpc
from inference import grpc_service_pb2, grpc_service_pb2_grpc

__all__ = ["SERVICE_NAMES", "ServingServer"]

SERVICE_NAMES: tuple[str, ...] = (
    predictor_pb2.DESCRIPTOR.services_by_name["Predictor"].full_name,
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)
"""The application services served (and reported by the health service)."""


class ServingServer:
    """A ``grpc.aio`` server with both APIs; health follows :meth:`set_serving`."""

    def __init__(self, core: ServingCore, metrics: ServingMetrics) -> None:
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        predictor_pb2_grpc.add_PredictorServicer_to_server(
            PredictorService(core, metrics), self.server
        )
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceService(core, metrics), self.server
        )
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = 0

    def bind(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the bound port."""
        self.port = self.server.add_insecure_port(f"{host}:{port}")
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
