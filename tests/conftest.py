"""The test harness: a real Kafka broker and a real redis-server, started on demand.

Session-scoped fixtures (started only when a test asks for them, on free ports,
with all state in a temporary directory, and stopped at the end):

- ``kafka``: a :class:`driftline.devtools.infra.KafkaNode` (``.bootstrap_servers``);
- ``redis_server``: a :class:`driftline.devtools.infra.RedisNode` (``.host``, ``.port``, ``.url``);
- ``platform_settings``: :class:`PlatformSettings` pointing at both, with every
  service port a free one and every path in the temporary directory.

Tests under ``tests/unit`` are marked ``unit`` (and may not open sockets, see
``tests/unit/conftest.py``); tests under ``tests/integration`` are marked
``integration``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.devtools.infra import KafkaNode, RedisNode, free_port
from driftline.settings import PlatformSettings
from driftline.settings.models import InfraSettings

_TESTS = Path(__file__).resolve().parent
_REPO = _TESTS.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder: ``tests/unit`` → ``unit``, ``tests/integration`` → ``integration``."""
    unit, integration = _TESTS / "unit", _TESTS / "integration"
    for item in items:
        path = Path(str(item.path)).resolve()
        if path.is_relative_to(unit):
            item.add_marker(pytest.mark.unit)
        elif path.is_relative_to(integration):
            item.add_marker(pytest.mark.integration)


def _ports(count: int) -> list[int]:
    chosen: list[int] = []
    while len(chosen) < count:
        chosen.append(free_port(exclude=frozenset(chosen)))
    return chosen


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaNode]:
    """A real single-node Kafka (KRaft) on free loopback ports, for the whole session."""
    infra = InfraSettings()  # honours DRIFTLINE_INFRA__JAR_CACHE / __KAFKA_VERSION
    port, controller_port = _ports(2)
    node = KafkaNode(
        tmp_path_factory.mktemp("kafka-node"),
        port=port,
        controller_port=controller_port,
        kafka_version=infra.kafka_version,
        jar_cache=infra.jar_cache,
        heap="512m",
        infra_dir=_REPO / "infra",
    )
    node.start(timeout_s=120.0)
    try:
        yield node
    finally:
        node.stop(timeout_s=20.0)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisNode]:
    """A real redis-server on a free loopback port, for the whole session."""
    node = RedisNode(
        tmp_path_factory.mktemp("redis-node"),
        port=free_port(),
        infra_dir=_REPO / "infra",
    )
    node.start(timeout_s=30.0)
    try:
        yield node
    finally:
        node.stop(timeout_s=10.0)


@pytest.fixture(scope="session")
def platform_settings(
    kafka: KafkaNode, redis_server: RedisNode, tmp_path_factory: pytest.TempPathFactory
) -> PlatformSettings:
    """Settings for the harness's Kafka and Redis; every service port free, state in a tmp dir."""
    root = tmp_path_factory.mktemp("platform")
    admin = _ports(6)
    grpc = _ports(3)
    features_grpc, registry_grpc, serving_grpc = grpc
    return PlatformSettings(
        kafka={"bootstrap_servers": kafka.bootstrap_servers, "startup_wait_s": 30.0},
        redis={"host": redis_server.host, "port": redis_server.port},
        infra={"state_dir": root / "state"},
        ingestion={"admin": {"port": admin[0]}},
        features={"admin": {"port": admin[1]}, "grpc_port": features_grpc},
        training={
            "admin": {"port": admin[2]},
            "registry_target": f"127.0.0.1:{registry_grpc}",
        },
        registry={
            "admin": {"port": admin[3]},
            "grpc_port": registry_grpc,
            "artifact_dir": root / "artifacts",
        },
        serving={
            "admin": {"port": admin[4]},
            "grpc_port": serving_grpc,
            "features_target": f"127.0.0.1:{features_grpc}",
            "registry_target": f"127.0.0.1:{registry_grpc}",
        },
        monitoring={"admin": {"port": admin[5]}},
    )
