"""The real local platform: the harness's broker and Redis, and LocalPlatform up/status/down."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.devtools.infra import (
    KafkaNode,
    LocalPlatform,
    PortInUseError,
    RedisNode,
    StartupError,
    free_port,
    kafka_answers,
    redis_answers,
)
from driftline.settings import PlatformSettings

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z")


def test_harness_broker_answers_an_outside_metadata_request(kafka: KafkaNode) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is needed: sudo apt-get install kcat"
    out = subprocess.run(
        [kcat, "-b", kafka.bootstrap_servers, "-L", "-J", "-m", "15"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    metadata = json.loads(out.stdout)
    brokers = metadata["brokers"]
    assert [b["id"] for b in brokers] == [1]
    assert brokers[0]["name"] == kafka.bootstrap_servers


def test_harness_redis_answers_redis_cli(redis_server: RedisNode) -> None:
    redis_cli = shutil.which("redis-cli")
    assert redis_cli, "redis-cli is needed: sudo apt-get install redis-tools"
    out = subprocess.run(
        [redis_cli, "-h", redis_server.host, "-p", str(redis_server.port), "ping"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert out.stdout.strip() == "PONG"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"


def test_platform_settings_point_at_the_harness(
    platform_settings: PlatformSettings, kafka: KafkaNode, redis_server: RedisNode
) -> None:
    assert platform_settings.kafka.bootstrap_servers == kafka.bootstrap_servers
    assert platform_settings.redis.port == redis_server.port
    assert kafka_answers(platform_settings.kafka.bootstrap_servers, timeout_s=5)
    assert redis_answers(platform_settings.redis.host, platform_settings.redis.port, timeout_s=5)


async def test_a_services_waits_for_an_absent_dependency_raise_a_typed_error() -> None:
    """What each service calls at start (kafkaio's and runtime's waits), on a dead port."""
    import redis.asyncio as aioredis

    from driftline.contracts.errors import UnavailableError
    from driftline.kafkaio import wait_for_kafka
    from driftline.runtime import wait_for_redis
    from driftline.settings import KafkaSettings, RedisSettings

    port = free_port()
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"):
        await wait_for_kafka(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"), timeout_s=1.0)
    client = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        with pytest.raises(UnavailableError, match=f"127.0.0.1:{port}") as info:
            await wait_for_redis(
                client.ping, RedisSettings(host="127.0.0.1", port=port, startup_wait_s=1.0)
            )
    finally:
        await client.aclose()
    assert info.value.retriable and info.value.grpc_code == "UNAVAILABLE"
    assert time.monotonic() - started < 15


def _settings(state_dir: Path, **ports: int) -> PlatformSettings:
    kafka_port = ports.get("kafka", free_port())
    return PlatformSettings(
        kafka={
            "bootstrap_servers": f"127.0.0.1:{kafka_port}",
            "controller_port": ports.get("controller", free_port(exclude=frozenset({kafka_port}))),
        },
        redis={"port": ports.get("redis", free_port())},
        infra={
            "state_dir": state_dir,
            "kafka_heap": "256m",
            "ready_timeout_s": 120,
            "ops": {"enabled": False},  # Kafka and Redis here; the ops stack: test_ops_stack.py
        },
    )


@pytest.fixture
def local_platform(tmp_path: Path) -> Iterator[LocalPlatform]:
    platform = LocalPlatform(_settings(tmp_path / "state"), infra_dir=REPO / "infra")
    try:
        yield platform
    finally:
        platform.down(timeout_s=10)


def test_local_platform_up_status_second_up_and_down(local_platform: LocalPlatform) -> None:
    first = {o.name: o for o in local_platform.up()}
    assert set(first) == {"kafka", "redis"}
    assert not any(o.already_running for o in first.values())

    status = {s.name: s for s in local_platform.status()}
    for name in ("kafka", "redis"):
        assert status[name].running and status[name].answering, status[name].describe()
        assert status[name].pid == first[name].pid
        assert "running" in status[name].describe()

    # a second `up`, even from a fresh object, starts no duplicate
    again = LocalPlatform(local_platform.settings, infra_dir=REPO / "infra").up()
    for outcome in again:
        assert outcome.already_running
        assert outcome.pid == first[outcome.name].pid
        assert outcome.describe().startswith(f"{outcome.name}: already running (pid ")

    stopped = {o.name: o for o in local_platform.down()}
    for name in ("kafka", "redis"):
        pid = first[name].pid
        assert stopped[name].pid == pid
        assert not _alive(pid), f"{name} (pid {pid}) still alive after down"
    assert not local_platform.kafka.pid_file.exists()
    assert not local_platform.redis.pid_file.exists()
    after = {s.name: s for s in local_platform.status()}
    assert not after["kafka"].running and not after["kafka"].answering
    assert not after["redis"].running and not after["redis"].answering
    # `down` again is a no-op
    assert all(o.pid is None for o in local_platform.down())


def test_a_taken_port_names_the_setting_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        platform = LocalPlatform(
            _settings(tmp_path / "state", redis=taken), infra_dir=REPO / "infra"
        )
        with pytest.raises(PortInUseError) as info:
            platform.up()
    message = str(info.value)
    assert f"port {taken}" in message and "DRIFTLINE_REDIS__PORT" in message
    assert info.value.setting == "DRIFTLINE_REDIS__PORT"
    assert not platform.kafka.pid_file.exists() and not platform.redis.pid_file.exists()
    assert not kafka_answers(platform.kafka.bootstrap_servers, timeout_s=0.5)


class _Crashing(RedisNode):
    def prepare(self) -> list[str]:
        return ["sh", "-c", "echo 'FATAL: cannot start, see here'; exit 3"]


def test_a_component_that_dies_while_starting_reports_its_log_tail(tmp_path: Path) -> None:
    node = _Crashing(tmp_path, port=free_port(), infra_dir=REPO / "infra")
    with pytest.raises(StartupError) as info:
        node.start(timeout_s=10)
    assert "exited with status 3" in str(info.value)
    assert "FATAL: cannot start, see here" in str(info.value)
