"""docker-compose.yml (for users with Docker) must agree with the settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline.settings import load_settings
from driftline.settings.models import SERVICE_NAMES

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_runs_kafka_redis_and_the_six_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"kafka", "redis", *SERVICE_NAMES}
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4")
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_service_environment_is_valid_settings_and_ports_agree(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = compose["services"][service]
    assert spec["command"] == ["run", service]
    for key in list(os.environ):
        if key.startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)
    for key, value in spec["environment"].items():
        assert key.startswith("DRIFTLINE_"), key
        monkeypatch.setenv(key, str(value))
    settings = load_settings()  # raises on any variable the settings do not know
    section = getattr(settings, service)
    default = type(section)()  # field defaults, not the environment
    # Compose publishes the same ports the settings default to (the README's service table).
    published = {int(p.split(":")[0]) for p in spec["ports"]}
    assert section.admin.port == default.admin.port
    assert default.admin.port in published
    if hasattr(section, "grpc_port"):
        assert section.grpc_port == default.grpc_port
        assert default.grpc_port in published
    assert str(default.admin.port) in " ".join(spec["healthcheck"]["test"])
    assert settings.kafka.bootstrap_servers.split(":")[0] == "kafka"
    assert settings.redis.host == "redis"


def test_peer_targets_name_compose_services(compose: dict[str, Any]) -> None:
    env = compose["services"]["serving"]["environment"]
    assert env["DRIFTLINE_SERVING__FEATURES_TARGET"].split(":") == ["features", "50051"]
    assert env["DRIFTLINE_SERVING__REGISTRY_TARGET"].split(":") == ["registry", "50052"]
