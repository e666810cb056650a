"""Fixtures of the training service's integration tests: a registry service on the real
broker (each module's ``settings`` says where), and a model spec of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from driftline.kafkaio import provision_topics
from driftline.registry.service import RegistryService
from driftline.registry_client import RegistryClient
from driftline.settings import PlatformSettings
from driftline.specs import ModelSpec, load_model_spec

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def registry(settings: PlatformSettings) -> AsyncIterator[RegistryClient]:
    await provision_topics(settings.kafka)
    service = RegistryService(settings)
    await service.start()
    client = RegistryClient(f"127.0.0.1:{service.grpc_port}", timeout_s=30)
    try:
        yield client
    finally:
        await client.close()
        await service.stop()


@pytest.fixture
def spec() -> ModelSpec:
    """The example spec, under a model and feature-set name no other test uses."""
    base = load_model_spec(ROOT / "examples" / "models" / "loans.yaml")
    run = uuid.uuid4().hex[:8]
    return ModelSpec.model_validate(
        base.model_dump() | {"name": f"loans-{run}", "featureset": f"loans_{run}"}
    )
