"""Failures on the cluster, under load: a three-broker Kafka cluster, a Redis Cluster of three
masters with a replica each, and two replicas of every service, all as real processes.

While loan applications, their labels and a Predict per event stream in, the test kills the
broker that leads the most partitions, then a Redis master (its replica takes over), then
one replica of each service in turn — the active trainer, the active monitor and the
registry replica the others reach first among them — and never restarts anything.  Then,
as a user would check: every event sent is on ``driftline.events.valid`` once (none lost,
none dead-lettered), the online aggregates equal a brute-force recomputation, no version
number was given twice, no Predict failed (the client retries UNAVAILABLE on the other
serving replica within its deadline), and, after a change of concept, the surviving
replicas close the loop: a version trained on the new concept is promoted and serving
answers with it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.chaos.chaos_stream import (
    LiveStream,
    check_stream_outcome,
    registry_view,
    wait_champion,
)
from support.platform import SERVICES, LivePlatform, await_until, fast_loop_env

from driftline.devtools.infra import KafkaCluster, RedisCluster

pytestmark = pytest.mark.timeout(900)

REGISTRY_TOKEN = "cluster-chaos-token"
SESSION_S = "6"
"""Training's and monitoring's session timeout: how long a silent active replica keeps its role."""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePlatform]:
    root: Path = tmp_path_factory.mktemp("cluster-chaos")
    env = fast_loop_env(root, REGISTRY_TOKEN)
    env.update(
        DRIFTLINE_TRAINING__SESSION_TIMEOUT_S=SESSION_S,
        DRIFTLINE_MONITORING__SESSION_TIMEOUT_S=SESSION_S,
        # A concept change is found within a few hundred labelled predictions.
        DRIFTLINE_MONITORING__DETECTOR__WARMUP="300",
        DRIFTLINE_MONITORING__COOLDOWN_S="30",
    )
    live = LivePlatform(root, env, cluster=True, replicas=2)
    try:
        live.start(timeout_s=240.0)
        yield live
    finally:
        live.stop()


async def test_kills_on_the_cluster_lose_nothing_and_the_loop_still_closes(
    platform: LivePlatform,
) -> None:
    kafka, redis_cluster = platform.kafka, platform.redis
    assert isinstance(kafka, KafkaCluster) and isinstance(redis_cluster, RedisCluster)
    stream = LiveStream(platform, "cluster", rate=30.0, retry_unavailable=True)
    stream.start()
    recoveries: dict[str, float] = {}
    try:
        await wait_champion(platform.registry_target, timeout_s=240)
        await stream.wait_sent(60)
        # Until serving has the first champion, Predict answers NOT_FOUND: not a failure.
        failed_before_kills = Counter(stream.predict_failed)

        victim, led = platform.busiest_broker()
        print(f"\nSIGKILL Kafka node {victim} (leads {led} partitions)")
        sent = stream.sent
        kafka.node(victim).process.signal(signal.SIGKILL)
        killed = time.monotonic()
        await stream.wait_sent(1, timeout_s=120)
        recoveries[f"kafka node {victim} (next event acknowledged)"] = time.monotonic() - killed
        assert stream.sent > sent
        await stream.wait_sent(60)

        master = redis_cluster.masters()[0]
        print(f"SIGKILL Redis master {master.address}")
        master.process.signal(signal.SIGKILL)
        killed = time.monotonic()

        def promoted() -> bool:
            masters = {m.address for m in redis_cluster.masters()}
            return len(masters) == 3 and master.address not in masters

        await await_until(promoted, 60, "the killed master's replica promoted in its place")
        recoveries[f"redis master {master.address} (replica promoted)"] = time.monotonic() - killed
        await stream.wait_sent(60)

        for service in SERVICES:
            instance = (
                platform.active(service)
                if service in ("training", "monitoring")
                else f"{service}"  # the first address every client tries
            )
            print(f"SIGKILL {instance}")
            await asyncio.to_thread(platform.kill, instance)
            await stream.wait_sent(45)

        # Every killed role has a survivor holding it.
        await await_until(
            lambda: any(
                platform.metric(i, "driftline_training_active") == 1
                for i in ("training", "training-1")
            ),
            60,
            "a trainer active after the kill",
        )
        await await_until(
            lambda: any(
                platform.metric(i, "driftline_monitoring_active") == 1
                for i in ("monitoring", "monitoring-1")
            ),
            60,
            "a monitor active after the kill",
        )

        # The loop on the survivors: a new concept → drift → retraining → a new champion.
        before = await registry_view(platform.registry_target)
        champion_before = before.champion()
        stream.concept = 4
        await await_until(
            lambda: _new_champion(platform, champion_before),
            240,
            "a new champion after the concept changed (retrained by the surviving trainer)",
            poll_s=2.0,
        )
        await stream.wait_sent(30)
    finally:
        await stream.stop()
        print(f"recoveries: {recoveries}")

    await check_stream_outcome(platform, stream)
    view = await registry_view(platform.registry_target)
    numbers = [v for v, _ in view.versions]
    assert numbers == list(range(1, len(numbers) + 1)), f"a version number twice: {numbers}"
    failed = stream.predict_failed - failed_before_kills
    assert not failed, (
        f"Predict failed after the first champion: {dict(failed)} of {stream.predict_ok} "
        f"answered (retried on UNAVAILABLE)\n{platform.logs(10)}"
    )
    champion = view.champion()
    assert champion is not None and stream.versions_answered[champion] > 0


async def _new_champion(platform: LivePlatform, old: int | None) -> bool:
    view = await registry_view(platform.registry_target)
    now = view.champion()
    if now is None or now == old:
        return False
    reasons = [h for h in view.history if h[1] == "champion" and h[3] == now]
    return bool(reasons)
