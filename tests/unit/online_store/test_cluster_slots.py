"""Redis Cluster key hashing and the per-master read pipeline, on in-memory nodes.

The real cluster is exercised in ``tests/integration/cluster``; here each rule of the
client is pinned where a fake node can say exactly ``MOVED`` or ``ASK``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from redis.exceptions import ConnectionError, ResponseError

from driftline.devtools.infra.errors import InfraError
from driftline.devtools.infra.redis_cluster import RedisCluster
from driftline.online_store.cluster import ClusterPipelinedRedis, SlotRange, slot_of, tag_for_slot
from driftline.online_store.resp import _Batch, _Protocol
from driftline.settings import PlatformSettings, RedisSettings


def test_slots_are_those_redis_computes() -> None:
    # Values from the cluster specification and CLUSTER KEYSLOT.
    assert slot_of("123456789") == 0x31C3 % 16384
    assert slot_of("foo") == 12182
    assert slot_of("{user1000}.following") == slot_of("{user1000}.followers")
    # An empty tag "{}" is no tag: the whole key is hashed.
    assert slot_of("a{}b") != slot_of("")


@pytest.mark.parametrize("slot", [0, 1, 5460, 5461, 10923, 16383])
def test_a_tag_for_every_slot(slot: int) -> None:
    tag = tag_for_slot(slot)
    assert slot_of(f"dl:f:__generation__:{{{tag}}}") == slot
    assert slot_of(f"anything{{{tag}}}else") == slot


def test_a_slot_out_of_range_has_no_tag() -> None:
    with pytest.raises(ValueError, match=r"0\.\.16383"):
        tag_for_slot(16384)


class FakeNode:
    """A node that owns some slots; MOVED/ASK for keys it is told about, HMGET otherwise."""

    def __init__(self, address: str, data: dict[str, str]) -> None:
        self.address = address
        self.data = data
        self.moved: dict[str, str] = {}
        self.ask: dict[str, str] = {}
        self.batches: list[list[tuple[Any, ...]]] = []
        self.dead = False

    async def execute(self, *args: Any) -> Any:
        assert args == ("CLUSTER", "SLOTS")
        if self.dead:
            raise ConnectionError(f"cannot connect to Redis at {self.address}")
        return SLOTS_REPLY

    async def send_many(self, commands: list[tuple[Any, ...]]) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        future.set_result(await self.execute_many(commands))
        return future

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if self.dead:
            raise ConnectionError(f"lost the connection to Redis at {self.address}")
        self.batches.append(commands)
        out: list[Any] = []
        asking = False
        for command in commands:
            if command == ("ASKING",):
                asking = True
                out.append(b"OK")
                continue
            key = command[1]
            if key in self.moved:
                out.append(ResponseError(f"MOVED {slot_of(key)} {self.moved[key]}"))
            elif key in self.ask and not asking:
                out.append(ResponseError(f"ASK {slot_of(key)} {self.ask[key]}"))
            elif key == "broken":
                out.append(ResponseError("WRONGTYPE Operation against a key"))
            else:
                out.append([self.data.get(key, "").encode() or None])
            asking = False
        return out


SLOTS_REPLY = [
    [0, 5460, [b"127.0.0.1", 7001, b"id1"], [b"127.0.0.1", 7004, b"id4"]],
    [5461, 10922, [b"", 7002, b"id2"]],  # an empty host: the seed's
    [10923, 16383, [b"127.0.0.1", 7003, b"id3"]],
]


def _owner(key: str) -> str:
    slot = slot_of(key)
    return (
        "127.0.0.1:7001"
        if slot <= 5460
        else "127.0.0.1:7002"
        if slot <= 10922
        else "127.0.0.1:7003"
    )


def _client(nodes: dict[str, FakeNode]) -> ClusterPipelinedRedis:
    client = ClusterPipelinedRedis("redis://127.0.0.1:7001/0")

    def node(address: str) -> Any:
        return nodes.setdefault(address, FakeNode(address, {}))

    client.node = node  # type: ignore[method-assign]
    return client


def _keys(count: int) -> list[str]:
    return [f"dl:f:fs:e{i}" for i in range(count)]


def test_reads_are_grouped_per_master_and_come_back_in_order() -> None:
    keys = _keys(60)
    nodes = {a: FakeNode(a, {}) for a in ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")}
    for k in keys:
        nodes[_owner(k)].data[k] = k.upper()
    client = _client(nodes)
    replies = asyncio.run(client.execute_keyed([("HMGET", k, "x") for k in [*keys, keys[0]]]))
    assert replies == [[k.upper().encode()] for k in [*keys, keys[0]]]
    # One batch per master, each holding exactly its own keys.
    for address, node in nodes.items():
        assert len(node.batches) == 1
        assert {c[1] for c in node.batches[0]} == {k for k in keys if _owner(k) == address}
    ranges = asyncio.run(client.slot_ranges())
    assert ranges == [
        SlotRange(0, 5460, "127.0.0.1:7001"),
        SlotRange(5461, 10922, "127.0.0.1:7002"),
        SlotRange(10923, 16383, "127.0.0.1:7003"),
    ]


def test_moved_is_followed_and_the_map_fetched_again() -> None:
    key = next(k for k in _keys(50) if _owner(k) == "127.0.0.1:7001")
    old, new = FakeNode("127.0.0.1:7001", {}), FakeNode("127.0.0.1:7004", {key: "v"})
    old.moved[key] = "127.0.0.1:7004"
    client = _client({old.address: old, new.address: new})
    assert asyncio.run(client.execute_keyed([("HMGET", key, "x")])) == [[b"v"]]
    assert client._owners is None  # the next call fetches CLUSTER SLOTS again


def test_ask_is_followed_with_asking_first() -> None:
    key = next(k for k in _keys(50) if _owner(k) == "127.0.0.1:7002")
    here, there = FakeNode("127.0.0.1:7002", {}), FakeNode("127.0.0.1:7003", {key: "v"})
    here.ask[key] = "127.0.0.1:7003"
    client = _client({here.address: here, there.address: there})
    assert asyncio.run(client.execute_keyed([("HMGET", key, "x")])) == [[b"v"]]
    assert there.batches == [[("ASKING",), ("HMGET", key, "x")]]
    assert client._owners is not None  # ASK is a one-off: the map stays


def test_endless_redirects_give_up() -> None:
    key = next(k for k in _keys(50) if _owner(k) == "127.0.0.1:7001")
    a, b = FakeNode("127.0.0.1:7001", {}), FakeNode("127.0.0.1:7009", {})
    a.moved[key], b.moved[key] = b.address, a.address
    with pytest.raises(ResponseError, match="redirected a command more than 5 times"):
        asyncio.run(_client({a.address: a, b.address: b}).execute_keyed([("HMGET", key, "x")]))


def test_other_error_replies_raise() -> None:
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        asyncio.run(_client({}).execute_keyed([("HMGET", "broken", "x")]))


def test_a_dead_node_fails_the_read_and_the_map_is_fetched_from_another() -> None:
    key = next(k for k in _keys(50) if _owner(k) == "127.0.0.1:7001")
    nodes = {"127.0.0.1:7001": FakeNode("127.0.0.1:7001", {key: "v"})}
    client = _client(nodes)
    assert asyncio.run(client.execute_keyed([("HMGET", key, "x")])) == [[b"v"]]
    nodes["127.0.0.1:7001"].dead = True
    with pytest.raises(ConnectionError):
        asyncio.run(client.execute_keyed([("HMGET", key, "x")]))
    assert client._owners is None
    # The seed is dead too: the next node CLUSTER SLOTS named answers instead.
    asyncio.run(client.refresh())
    assert client._owners is not None


def test_no_node_answering_names_them_all() -> None:
    client = _client({})
    client._seeds = ["127.0.0.1:7001", "127.0.0.1:7002"]
    for address in client._seeds:
        client.node(address).dead = True  # type: ignore[attr-defined]
    with pytest.raises(ConnectionError, match=r"7001: .*; 127\.0\.0\.1:7002"):
        asyncio.run(client.refresh())


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


async def _batch_replies(wire: bytes, count: int) -> list[Any]:
    protocol = _Protocol("test")
    future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    batch = _Batch(future, count)
    protocol.waiting.extend([batch] * count)
    protocol.data_received(wire)
    return await future


def test_a_batch_keeps_error_replies_in_place() -> None:
    replies = asyncio.run(_batch_replies(b"+OK\r\n-MOVED 3999 127.0.0.1:7002\r\n:5\r\n", 3))
    assert replies[0] == b"OK" and replies[2] == 5
    assert isinstance(replies[1], ResponseError) and str(replies[1]).startswith("MOVED")


def test_a_lost_connection_fails_the_whole_batch() -> None:
    async def run() -> None:
        protocol = _Protocol("test")
        protocol.transport = FakeTransport()  # type: ignore[assignment]
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        protocol.waiting.extend([_Batch(future, 2)] * 2)
        protocol.data_received(b"+OK\r\n")
        protocol.connection_lost(None)
        with pytest.raises(ConnectionError, match="lost the connection"):
            await future

    asyncio.run(run())


def test_cluster_settings() -> None:
    assert RedisSettings().cluster is False
    with pytest.raises(ValidationError, match=r"redis\.db must be 0"):
        RedisSettings(cluster=True, db=1)
    settings = PlatformSettings(redis={"port": 7000, "cluster": True})
    cluster = RedisCluster.from_settings(settings)
    assert [n.port for n in cluster.nodes] == [7000, 7001, 7002, 7003, 7004, 7005]
    assert cluster.url == "redis://127.0.0.1:7000/0"
    assert [c.port for c in cluster.port_claims()][:2] == [7000, 17000]
    wrong = PlatformSettings(
        redis={"port": 7000}, infra={"redis_cluster_ports": [7100, 7101, 7102, 7103, 7104, 7105]}
    )
    with pytest.raises(InfraError, match=r"must start with redis\.port"):
        RedisCluster.from_settings(wrong)
    secure = PlatformSettings(security={"enabled": True, "credentials_dir": Path("/nonexistent")})
    with pytest.raises(InfraError, match="no secure mode yet"):
        RedisCluster.from_settings(secure)
