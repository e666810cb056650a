"""The registry over gRPC against the real broker: durability, integrity, auth, rollback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from river import tree

from driftline.artifacts import digest, load_model
from driftline.contracts.errors import (
    FailedPreconditionError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
)
from driftline.contracts.messages import Lineage, OffsetRange
from driftline.registry_client import RegistryClient
from driftline.v1 import registry_pb2, registry_pb2_grpc

from .conftest import SIGNING_KEY, StartRegistry, client_of, model_name

pytestmark = pytest.mark.integration


def trained_tree(n: int) -> Any:
    model: Any = tree.HoeffdingTreeClassifier()
    for i in range(n):
        model.learn_one({"salary": float(i * 1000 % 90_000), "age": float(i % 60)}, i % 3 == 0)
    return model


def lineage_of(i: int, trigger: str | None = None) -> Lineage:
    return Lineage(
        featureset="loans",
        featureset_version=1,
        offsets=[OffsetRange(topic="driftline.features", partition=0, first=0, last=999 + i)],
        event_time_from=datetime(2026, 11, 1, tzinfo=UTC),
        event_time_to=datetime(2026, 11, 2, tzinfo=UTC),
        examples=1000 + i,
        parent_version=i or None,
        trigger_id=trigger,
    )


async def observed_state(client: RegistryClient, name: str) -> dict[str, Any]:
    return {
        "versions": [v.model_dump() for v in await client.list_versions(name)],
        "models": [m.model_dump() for m in await client.list_models() if m.name == name],
        "history": [c.model_dump() for c in await client.history(name)],
    }


async def test_restart_keeps_versions_aliases_and_history(start_registry: StartRegistry) -> None:
    name = model_name()
    first = await start_registry()
    async with client_of(first) as client:
        for i in range(3):
            v = await client.register(
                name,
                model=trained_tree(200 + i * 50),
                metrics={"accuracy": 0.9 + i / 100, "examples": 1000.0 + i},
                lineage=lineage_of(i),
                spec={"task": "binary", "pipeline": [{"class": "tree.HoeffdingTreeClassifier"}]},
                actor="training",
                params={"grace_period": 200, "delta": 1e-7},
                drift_ids=[f"drift-{i}"] if i else [],
            )
            assert v.version == i + 1
        await client.set_alias(name, "champion", 2, actor="alice", reason="best on window")
        await client.set_alias(name, "challenger", 3, actor="training", trigger_id="retrain-1")
        before = await observed_state(client, name)
    await first.stop()

    second = await start_registry()
    async with client_of(second) as client:
        after = await observed_state(client, name)
        assert after == before
        champion = await client.get(name, alias="champion")
        assert champion.version == 2 and champion.aliases == ["champion"]
        assert champion.metrics["accuracy"] == pytest.approx(0.91)
        assert champion.lineage == lineage_of(1)
        assert champion.params == {"grace_period": 200, "delta": 1e-7}
        assert champion.drift_ids == ["drift-1"]
        assert champion.spec["task"] == "binary" and "_registry" not in champion.spec
        assert champion.created_by == "training"
        history = await client.history(name)
        assert [(c.alias, c.version, c.actor) for c in history] == [
            ("champion", 2, "alice"),
            ("challenger", 3, "training"),
        ]
        model, meta = await client.load_model(name, alias="champion", signing_key=SIGNING_KEY)
        x = {"salary": 30_000.0, "age": 30.0}
        assert model.predict_one(x) == trained_tree(250).predict_one(x)
        assert meta.signature_algorithm == "hmac-sha256" and meta.size_bytes == champion.size_bytes


async def test_tampered_or_unsigned_artifact_is_refused(start_registry: StartRegistry) -> None:
    name = model_name()
    service = await start_registry()
    async with client_of(service) as client:
        v = await client.register(name, model=trained_tree(100))
        data, meta = await client.download(name, version=v.version)
        assert digest(data) == meta.sha256 == v.sha256

        # Unsigned: the signature is missing.
        with pytest.raises(IntegrityError, match="unsigned"):
            load_model(data, meta.sha256, "", SIGNING_KEY)
        # Signed under a key the loader does not trust.
        with pytest.raises(IntegrityError, match="invalid signature"):
            await client.load_model(name, version=v.version, signing_key="someone-elses-key")

        # One byte changed on disk.
        path = service.core.store.path_of(v.sha256)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))
        with pytest.raises(IntegrityError, match="tampered"):
            await client.load_model(name, version=v.version, signing_key=SIGNING_KEY)
        # The registry keeps serving other requests.
        assert (await client.get(name)).version == v.version


async def test_same_idempotency_key_or_trigger_gives_one_version(
    start_registry: StartRegistry,
) -> None:
    name = model_name()
    service = await start_registry()
    async with client_of(service) as client:
        a = await client.register(name, b"artifact-a", idempotency_key="upload-1")
        b = await client.register(name, b"artifact-a", idempotency_key="upload-1")
        assert a.version == b.version == 1
        c = await client.register(name, b"candidate", trigger_id="retrain-abc")
        d = await client.register(name, b"candidate-2", trigger_id="retrain-abc")
        assert c.version == d.version == 2 and d.trigger_id == "retrain-abc"
        assert [v.version for v in await client.list_versions(name)] == [1, 2]
    # A second replica (fresh state from the log) also returns the existing version.
    other = await start_registry()
    async with client_of(other) as client:
        again = await client.register(name, b"candidate-3", trigger_id="retrain-abc")
        assert again.version == 2


async def test_missing_token_is_unauthenticated_and_server_keeps_serving(
    start_registry: StartRegistry,
) -> None:
    name = model_name()
    service = await start_registry(token="s3cret")
    async with client_of(service) as anonymous, client_of(service, token="s3cret") as admin:
        with pytest.raises(UnauthenticatedError, match="authorization: Bearer"):
            await anonymous.register(name, b"x")
        async with client_of(service, token="wrong") as wrong:
            with pytest.raises(UnauthenticatedError):
                await wrong.register(name, b"x")
        v = await admin.register(name, b"x")
        with pytest.raises(UnauthenticatedError):
            await anonymous.set_alias(name, "champion", v.version)
        # Reads need no token, and the server is still up.
        assert (await anonymous.get(name)).version == 1
        await admin.set_alias(name, "champion", 1)
        assert (await anonymous.get(name, alias="champion")).version == 1


async def test_rollback_to_previous_and_as_of(start_registry: StartRegistry) -> None:
    name = model_name()
    service = await start_registry()
    async with client_of(service) as client:
        for i in range(3):
            await client.register(name, f"model-{i}".encode())
        await client.set_alias(name, "champion", 1, reason="first")
        await asyncio.sleep(0.05)
        while_v1 = datetime.now(UTC)
        await asyncio.sleep(0.05)
        await client.set_alias(name, "champion", 2)
        await client.set_alias(name, "champion", 3)

        change, version = await client.rollback(name, actor="ops", reason="v3 regressed")
        assert (change.kind, change.version, change.previous_version) == ("rolled_back", 2, 3)
        assert version is not None and version.aliases == ["champion"]
        assert (await client.get(name, alias="champion")).version == 2

        change, _ = await client.rollback(name, as_of=while_v1, actor="ops")
        assert change.version == 1
        assert (await client.get(name, alias="champion")).version == 1
        kinds = [(c.kind, c.version) for c in await client.history(name, "champion")]
        assert kinds == [("set", 1), ("set", 2), ("set", 3), ("rolled_back", 2), ("rolled_back", 1)]
        last_two = await client.history(name, "champion", limit=2)
        assert [c.version for c in last_two] == [2, 1]


async def test_errors_carry_the_right_status(start_registry: StartRegistry) -> None:
    name = model_name()
    service = await start_registry()
    async with client_of(service) as client:
        with pytest.raises(NotFoundError, match="not registered"):
            await client.get(name)
        await client.register(name, b"x")
        with pytest.raises(NotFoundError, match="no version 5"):
            await client.download(name, version=5)
        with pytest.raises(NotFoundError, match="no 'shadow' alias"):
            await client.get(name, alias="shadow")
        with pytest.raises(InvalidArgumentError, match="champion, challenger, shadow"):
            await client.set_alias(name, "production", 1)
        with pytest.raises(InvalidArgumentError, match="empty"):
            await client.register("", b"x")
        with pytest.raises(FailedPreconditionError):
            await client.set_alias(name, "champion", 1, expected_version=7)
        with pytest.raises(NotFoundError):
            await client.delete_alias(name, "champion")

    # A raw upload whose first message is a chunk.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)

        async def chunk_first() -> Any:
            yield registry_pb2.RegisterVersionRequest(chunk=b"bytes")

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RegisterVersion(chunk_first())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "first RegisterVersion message must carry `metadata`" in (err.value.details() or "")


async def test_two_replicas_stay_consistent_under_concurrent_writes(
    start_registry: StartRegistry,
) -> None:
    name = model_name()
    a, b = await start_registry(), await start_registry()
    async with client_of(a) as ca, client_of(b) as cb:
        results = await asyncio.gather(
            *(ca.register(name, f"a{i}".encode()) for i in range(4)),
            *(cb.register(name, f"b{i}".encode()) for i in range(4)),
        )
        assert sorted(v.version for v in results) == list(range(1, 9))
        await ca.set_alias(name, "champion", 3)
        await cb.set_alias(name, "challenger", 4)
        # A replica acknowledges what it has applied; the other one follows the same log.
        for _ in range(100):
            if len(await ca.history(name)) == 2:
                break
            await asyncio.sleep(0.05)
        assert await observed_state(ca, name) == await observed_state(cb, name)
        shas = {v.version: v.sha256 for v in await cb.list_versions(name)}
        assert {r.version: r.sha256 for r in results} == shas
