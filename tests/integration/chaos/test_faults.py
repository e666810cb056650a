"""Faults under a live stream: a SIGKILL of every service, a broker restart, a Redis wipe.

One platform serves the module; each test streams loan applications with their
labels while a client calls ``Predict``, breaks something, and then checks what
a user would notice: every event accounted for (valid or dead-lettered, by
event id, none twice), online aggregates equal to a brute-force recomputation,
the registry's versions and alias history intact, serving answering.
"""

from __future__ import annotations

import asyncio

import pytest
import redis
from integration.chaos.chaos_stream import (
    LiveStream,
    check_stream_outcome,
    converged_online,
    online_features,
    registry_view,
    serving_answers,
    wait_champion,
)
from support.platform import SERVICES, LivePlatform

pytestmark = pytest.mark.timeout(600)


async def test_sigkill_each_service_mid_stream(platform: LivePlatform) -> None:
    stream = LiveStream(platform, "kill", rate=40.0)
    stream.start()
    try:
        await wait_champion(platform.registry_target)
        for name in SERVICES:
            await stream.wait_sent(80)
            before = await registry_view(platform.registry_target)
            old_pid = await asyncio.to_thread(platform.kill, name)
            await stream.wait_sent(20)  # the stream goes on while it is down
            new_pid = await asyncio.to_thread(platform.restart, name)
            assert new_pid != old_pid
            after = await registry_view(platform.registry_target)
            assert after.extends(before), (
                f"after SIGKILL of {name} the registry lost history:\n"
                f"before {before}\nafter  {after}\n{platform.log_tail('registry')}"
            )
        await stream.wait_sent(80)
    finally:
        await stream.stop()

    await check_stream_outcome(platform, stream)
    answer = await serving_answers(platform.serving_target, stream.events[-1]["entity_id"])
    view = await registry_view(platform.registry_target)
    assert answer.model_version == view.champion()
    assert stream.predict_ok > 0


async def test_broker_restart_mid_stream(platform: LivePlatform) -> None:
    pids = platform.pids()
    stream = LiveStream(platform, "broker", rate=40.0)
    stream.start()
    try:
        await stream.wait_sent(150)
        await asyncio.to_thread(platform.stop_kafka)
        await asyncio.to_thread(platform.start_kafka)
        await stream.wait_sent(150)
    finally:
        await stream.stop()

    await check_stream_outcome(platform, stream)
    # Nobody was restarted: every service reconnected by itself and is healthy.
    assert platform.pids() == pids, platform.logs()
    unhealthy = {n: platform.http_status(n) for n in SERVICES if platform.http_status(n) != 200}
    assert not unhealthy, f"unhealthy after the broker restart: {unhealthy}\n{platform.logs()}"
    await serving_answers(platform.serving_target, stream.events[-1]["entity_id"])


async def test_redis_wipe_rebuilds_the_online_store(platform: LivePlatform) -> None:
    stream = LiveStream(platform, "wipe", rate=80.0, entities=20)
    stream.start()
    try:
        await stream.wait_sent(300)
    finally:
        await stream.stop()
    await check_stream_outcome(platform, stream)
    entities = sorted({e["entity_id"] for e in stream.events})
    before = await online_features(platform.features_target, entities)
    assert all(v is not None for row in before.values() for v in row.values()), before

    client = redis.Redis(host=platform.redis.host, port=platform.redis.port)
    try:
        client.flushall()
        assert client.dbsize() == 0
    finally:
        client.close()

    problems = await converged_online(platform.features_target, before, timeout_s=60.0)
    assert not problems, (
        "the online store was not rebuilt after FLUSHALL:\n"
        + "\n".join(problems[:20])
        + "\n"
        + platform.log_tail("features")
    )
