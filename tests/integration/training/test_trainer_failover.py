"""Two ``python -m driftline.training`` replicas: one active trainer, one standby.

The active one is the member of ``driftline-training-retrain`` holding
``driftline.retrain``; it claims the ``training`` writer role in the registry before it
registers anything.  A paused trainer is replaced by the standby and, once resumed, is
fenced (the registry refuses it, or its group tells it it lost the partition): it exits by
itself and never registers again.  A killed one is replaced too.  Version numbers stay
contiguous and every version names the trainer that registered it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from driftline.contracts.errors import NotFoundError
from driftline.registry_client import RegistryClient
from driftline.settings import PlatformSettings
from driftline.specs import ModelSpec
from driftline.training.registry_sink import TRAINER_TAG

from .test_training_service import TrainingProcess, _produce_stream, _until
from .test_training_service import settings as settings  # the fixture

pytestmark = pytest.mark.integration

SESSION_S = 6
"""The trainers' ``training.session_timeout_s``: how long a silent one keeps its role."""


async def _ready(service: TrainingProcess) -> None:
    deadline = asyncio.get_running_loop().time() + 90
    while (r := await service.get("/readyz")) is None or r.status_code != 200:
        service.alive()
        assert asyncio.get_running_loop().time() < deadline, service.log_text()[-4000:]
        await asyncio.sleep(0.3)


async def _until_async(check: object, what: str, timeout: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


async def _members(settings: PlatformSettings) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        (group,) = await admin.describe_consumer_groups(
            [f"{settings.training.consumer_group}-retrain"]
        )
        return len(group.groups[0][5])  # (error, id, state, protocol_type, protocol, members)
    finally:
        await admin.close()


async def _by_trainer(registry: RegistryClient, name: str) -> list[tuple[int, str]]:
    try:
        versions = await registry.list_versions(name)
    except NotFoundError:  # no version yet
        return []
    return [(v.version, v.tags.get(TRAINER_TAG, "")) for v in versions]


async def test_a_standby_takes_over_from_a_paused_and_a_killed_trainer_and_fences_them(
    settings: PlatformSettings, registry: RegistryClient, spec: ModelSpec, tmp_path: Path
) -> None:
    env = {"DRIFTLINE_TRAINING__SESSION_TIMEOUT_S": str(SESSION_S)}

    def trainer(instance: str) -> TrainingProcess:
        return TrainingProcess(
            settings, registry.target, tmp_path, spec, instance_id=instance, extra_env=env
        )

    def active(service: TrainingProcess) -> object:
        async def check() -> bool:
            return await service.sample("driftline_training_active") == 1

        return check

    a = trainer("a")
    started = [a]
    try:
        await _ready(a)
        await _until_async(active(a), "the first trainer to become active")
        b = trainer("b")
        started.append(b)
        await _ready(b)

        async def both_members() -> bool:
            return await _members(settings) == 2

        await _until_async(both_members, "the standby to join the group")
        # A standby joining does not move the role (the sticky assignor keeps it in place).
        assert await a.sample("driftline_training_active") == 1
        assert await b.sample("driftline_training_active") == 0
        assert await a.sample("driftline_training_writer_epoch") == 1

        await _produce_stream(settings, spec)

        async def registered_by(instance: str, after: int = 0) -> bool:
            return any(
                who == instance and number > after
                for number, who in await _by_trainer(registry, spec.name)
            )

        await _until_async(lambda: registered_by("a"), "a version registered by trainer a")

        # Pause the active trainer: the standby takes over and claims the role.
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            await _until_async(active(b), "the standby to take over from a paused trainer")
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        assert await b.sample("driftline_training_writer_epoch") == 2
        # Resumed, the old trainer learns it lost the role and exits by itself.
        await _until(lambda: a.proc.poll() is not None, "the paused trainer to exit", 60)
        assert "is no longer the active trainer" in a.log_text()
        last_of_a = max(n for n, who in await _by_trainer(registry, spec.name) if who == "a")

        await _produce_stream(settings, spec)
        await _until_async(lambda: registered_by("b"), "a version registered by trainer b")

        # Restarted, the old trainer is a standby; kill the active one: it takes over again.
        a2 = trainer("a")
        started.append(a2)
        await _ready(a2)
        await _until_async(both_members, "the restarted trainer to join the group")
        assert await a2.sample("driftline_training_active") == 0
        last_of_b = max(n for n, who in await _by_trainer(registry, spec.name) if who == "b")
        b.proc.kill()
        b.proc.wait(10)
        await _until_async(active(a2), "the standby to take over from a killed trainer")
        assert await a2.sample("driftline_training_writer_epoch") == 3
        await _produce_stream(settings, spec)
        await _until_async(
            lambda: registered_by("a", after=last_of_b), "a version registered by a again"
        )
    finally:
        # In a thread: the registry serves from this test's event loop, and a trainer
        # told to stop first finishes the registration it may have under way.
        for service in started:
            await asyncio.to_thread(service.stop)

    versions = await _by_trainer(registry, spec.name)
    numbers = [n for n, _ in versions]
    assert numbers == list(range(1, len(numbers) + 1)), "no version number taken twice"
    # Every version names its trainer, and each trainer's versions come in its own turn.
    who = [w for _, w in versions]
    assert set(who) == {"a", "b"}
    assert all(w == "a" for n, w in versions if n <= last_of_a)
    assert all(w == "b" for n, w in versions if last_of_a < n <= last_of_b)
    assert all(w == "a" for n, w in versions if n > last_of_b)
