"""Registry replicas in-process against the harness's real Kafka broker, on real gRPC sockets."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from driftline.devtools.infra import free_port
from driftline.kafkaio import provision_topics
from driftline.registry.service import RegistryService
from driftline.registry_client import RegistryClient
from driftline.settings import PlatformSettings

SIGNING_KEY = "integration-signing-key"

StartRegistry = Callable[..., Awaitable[RegistryService]]


@pytest.fixture
def registry_settings(kafka: Any, tmp_path: Path) -> PlatformSettings:
    """Settings of a registry on free ports with its own artifact directory."""
    return PlatformSettings(
        kafka={"bootstrap_servers": kafka.bootstrap_servers, "startup_wait_s": 30},
        registry={
            "grpc_port": 0,
            "admin": {"port": free_port()},
            "artifact_dir": str(tmp_path / "artifacts"),
            "signing_key": SIGNING_KEY,
            "instance_id": uuid.uuid4().hex[:8],
        },
    )


@pytest.fixture
async def start_registry(
    registry_settings: PlatformSettings,
) -> AsyncIterator[StartRegistry]:
    """Start registry replicas (``**overrides`` patch the registry section); all stop after."""
    await provision_topics(registry_settings.kafka)
    running: list[RegistryService] = []

    async def start(**overrides: Any) -> RegistryService:
        registry = registry_settings.registry.model_copy(
            update={"instance_id": uuid.uuid4().hex[:8], **overrides}
        )
        service = RegistryService(registry_settings.model_copy(update={"registry": registry}))
        await service.start()
        running.append(service)
        return service

    yield start
    for service in running:
        await service.stop()


def client_of(service: RegistryService, token: str | None = None) -> RegistryClient:
    """A client of ``service``'s bound gRPC port."""
    return RegistryClient(f"127.0.0.1:{service.grpc_port}", token=token, timeout_s=20)


def model_name() -> str:
    """A model name no other test uses (tests share the driftline.models topic)."""
    return f"loans-{uuid.uuid4().hex[:10]}"
