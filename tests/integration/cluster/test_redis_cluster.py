"""Every Redis user on a real Redis Cluster: six redis-server processes, three masters
with a replica each, as ``driftline infra up --redis-cluster`` runs them.

One cluster for the module. The online store passes its whole conformance suite on it
(built from settings, as the features service builds it), its entities land on all three
masters (counted by ``redis-cli`` from outside), ingestion's dedup window works across
slots, the generation marker notices one master's wipe, and when a master is SIGKILLed its
replica takes over and the store reads and writes again, with nothing written before the
kill lost. The failover test runs last: it leaves the cluster with a dead node.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from driftline.devtools.infra import RedisCluster, free_cluster_ports
from driftline.devtools.infra.readiness import redis_cluster_ok
from driftline.devtools.infra.redis_cluster import RedisClusterNode
from driftline.ingestion.dedup import RedisDedupStore
from driftline.online_store import (
    EntityWrite,
    FeatureStatus,
    OnlineStore,
    StoreUnavailable,
    create_online_store,
)
from driftline.online_store.checks import ALL_CHECKS, GENERATION_MARKER_CHECKS, SPEC
from driftline.online_store.cluster import slot_of, tag_for_slot
from driftline.online_store.redis_store import RedisOnlineStore
from driftline.settings import PlatformSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_795_017_600_000_000  # µs
NOW = T0 / 1e6 + 10


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    nodes = RedisCluster(
        tmp_path_factory.mktemp("redis-cluster"),
        ports=free_cluster_ports(),
        infra_dir=ROOT / "infra",
    )
    nodes.start(timeout_s=60.0)
    try:
        yield nodes
    finally:
        nodes.stop(timeout_s=10.0)


def _settings(cluster: RedisCluster) -> PlatformSettings:
    first = cluster.nodes[0]
    return PlatformSettings(redis={"host": first.host, "port": first.port, "cluster": True})


def _store(cluster: RedisCluster) -> RedisOnlineStore:
    store = create_online_store(_settings(cluster))
    assert isinstance(store, RedisOnlineStore)
    return store


async def _flushall(cluster: RedisCluster) -> None:
    admin = AsyncRedisCluster.from_url(cluster.url)
    try:
        await admin.flushall()  # redis-py sends it to every master
    finally:
        await admin.aclose()


def _cli(node: RedisClusterNode, *args: str) -> str:
    """``redis-cli`` against one node, as an outside client."""
    done = subprocess.run(
        ["redis-cli", "-h", node.host, "-p", str(node.port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def test_the_cluster_has_three_masters_each_with_a_replica(cluster: RedisCluster) -> None:
    assert all(redis_cluster_ok(n.host, n.port) for n in cluster.nodes)
    masters = cluster.masters()
    assert len(masters) == 3
    for master in masters:
        info = _cli(master, "INFO", "replication")
        assert "role:master" in info and "connected_slaves:1" in info, info


@pytest.mark.parametrize(
    "check", [*ALL_CHECKS, *GENERATION_MARKER_CHECKS], ids=lambda c: c.__name__
)
async def test_the_online_store_conforms_on_the_cluster(
    check: Callable[[OnlineStore], Awaitable[None]], cluster: RedisCluster
) -> None:
    await _flushall(cluster)
    store = _store(cluster)
    try:
        await check(store)
    finally:
        await store.close()


async def test_entities_spread_over_all_three_masters(cluster: RedisCluster) -> None:
    await _flushall(cluster)
    store = _store(cluster)
    n = 600
    try:
        writes = [EntityWrite(f"u{i}", {"x": (float(i), T0)}) for i in range(n)]
        await store.write("spread", writes)
        # One read of every entity: three per-master pipelines, in request order.
        rows = await store.read(
            SPEC.model_copy(update={"name": "spread"}), [f"u{i}" for i in range(n)], ["x"], NOW
        )
        assert [row[0].value for row in rows] == [float(i) for i in range(n)]
    finally:
        await store.close()
    counts = {}
    for master in cluster.masters():
        keys = _cli(master, "--scan", "--pattern", "dl:f:spread:*").split()
        counts[master.address] = len(keys)
        # The server puts each key where the client computed (CLUSTER KEYSLOT).
        for key in keys[:5]:
            assert int(_cli(master, "CLUSTER", "KEYSLOT", key)) == slot_of(key)
    assert sum(counts.values()) == n
    assert all(count > n / 6 for count in counts.values()), counts
    # A hash tag decides the slot, as the server says too.
    tagged = f"dl:f:__generation__:{{{tag_for_slot(12345)}}}"
    assert int(_cli(cluster.nodes[0], "CLUSTER", "KEYSLOT", tagged)) == 12345


async def test_dedup_claims_and_releases_across_slots(cluster: RedisCluster) -> None:
    client = AsyncRedisCluster.from_url(cluster.url)
    # A fresh script cache: the release must load its script on the masters itself.
    await client.script_flush()
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisDedupStore(client, window_s=60, prefix=prefix)
    ids = [f"event:e{i}" for i in range(100)]
    try:
        assert await store.claim_many([(i, "a") for i in ids]) == [True] * 100
        # The same owner again (a replay) holds them; another owner is a duplicate.
        assert await store.claim_many([(ids[0], "a"), (ids[1], "b")]) == [True, False]
        await store.release_many([(i, "b") for i in ids])  # not b's: nothing released
        assert await store.claim_many([(i, "b") for i in ids]) == [False] * 100
        await store.release_many([(i, "a") for i in ids[:50]])
        assert await store.claim_many([(i, "b") for i in ids]) == [True] * 50 + [False] * 50
    finally:
        await client.aclose()
    slots = {slot_of(prefix + i) for i in ids}
    assert len(slots) > 50  # the claims really were spread over many slots


async def test_the_marker_notices_one_master_wiped(cluster: RedisCluster) -> None:
    await _flushall(cluster)
    store = _store(cluster)
    try:
        marker = store.generation_marker
        assert marker is not None
        first = await marker.claim("first")
        assert first == "first"
        # One master alone loses its data (FLUSHALL sent to it, replicated to its replica).
        _cli(cluster.masters()[1], "FLUSHALL")
        assert await marker.read() is None
        # A worker's claim refills that master's key: the generation is a new one, so every
        # worker, also one that did not see the gap, rebuilds what it holds.
        second = await marker.claim("second")
        assert second not in ("first", "second")
        assert await marker.read() == second
    finally:
        await store.close()


def _replica_of(cluster: RedisCluster, master: RedisClusterNode) -> RedisClusterNode:
    for node in cluster.nodes:
        info = _cli(node, "INFO", "replication")
        if "role:slave" in info and f"master_port:{master.port}" in info.split():
            return node
    raise AssertionError(f"no replica of {master.address}")


def _wait_replicated(master: RedisClusterNode) -> None:
    """WAIT for the replica: a write after the store's, on this connection, acknowledged
    by the replica means the store's writes (earlier in the replication stream) are too."""
    client = redis.Redis(host=master.host, port=master.port)
    try:
        slots = client.cluster("SLOTS")
        mine = next(s for s in slots if int(s[2][1]) == master.port)
        client.set(f"test:wait:{{{tag_for_slot(int(mine[0]))}}}", "1")
        assert client.wait(1, 10_000) == 1
    finally:
        client.close()


async def _eventually(step: Callable[[], Awaitable[object]], within_s: float) -> float:
    """Seconds until ``step`` stops raising StoreUnavailable (fails after ``within_s``)."""
    began = time.monotonic()
    while True:
        try:
            await step()
            return time.monotonic() - began
        except StoreUnavailable:
            if time.monotonic() - began > within_s:
                raise
            await asyncio.sleep(0.2)


async def test_a_killed_master_is_replaced_by_its_replica_and_nothing_is_lost(
    cluster: RedisCluster,
) -> None:
    await _flushall(cluster)
    store = _store(cluster)
    n = 300
    ids = [f"k{i}" for i in range(n)]
    try:
        await store.write(SPEC.name, [EntityWrite(e, {"x": (1.5, T0)}) for e in ids])
        assert all(r[0].value == 1.5 for r in await store.read(SPEC, ids, ["x"], NOW))
        masters = cluster.masters()
        for master in masters:
            _wait_replicated(master)
        victim = masters[0]
        replica = _replica_of(cluster, victim)
        on_victim = set(_cli(victim, "--scan", "--pattern", "dl:f:checks:*").split())
        assert on_victim

        killed = time.monotonic()
        victim.process.signal(signal.SIGKILL)
        survivors = [n for n in cluster.nodes if n is not victim]
        deadline = killed + 30
        while time.monotonic() < deadline:
            promoted = "role:master" in _cli(replica, "INFO", "replication")
            if promoted and all(redis_cluster_ok(n.host, n.port) for n in survivors):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the replica was not promoted within 30 s")
        failover_s = time.monotonic() - killed

        # The same store (its connections to the dead master broken) reads again...
        async def read_all() -> None:
            rows = await store.read(SPEC, ids, ["x"], NOW)
            assert [r[0].status for r in rows] == [FeatureStatus.PRESENT] * n
            assert all(r[0].value == 1.5 for r in rows)

        read_s = await _eventually(read_all, within_s=15)

        # ...and writes (the promoted replica has no scripts loaded: NOSCRIPT, reload).
        async def write_newer() -> None:
            await store.write(SPEC.name, [EntityWrite(e, {"x": (2.5, T0 + 1)}) for e in ids])

        write_s = await _eventually(write_newer, within_s=15)
        rows = await store.read(SPEC, ids, ["x"], NOW)
        assert all(r[0].value == 2.5 for r in rows)
        # The old master's keys now live on its replica, every one of them.
        assert on_victim <= set(_cli(replica, "--scan", "--pattern", "dl:f:checks:*").split())
        print(
            f"failover {failover_s:.1f}s; then reads after {read_s:.2f}s, "
            f"writes after {write_s:.2f}s"
        )
    finally:
        await store.close()
