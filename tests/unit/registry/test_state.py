"""The registry state machine: replay determinism and conflict resolution by log order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from driftline.artifacts import ArtifactStore
from driftline.contracts.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from driftline.contracts.messages import Lineage, RegistryEvent, RegistryEventKind
from driftline.registry.core import Registration, RegistryCore
from driftline.registry.state import RegistryState

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class LoopbackLog:
    """An ordered in-memory log that delivers each event to the core after a loop turn,
    as the Kafka follower does (the writer is woken by its own event coming back)."""

    def __init__(self) -> None:
        self.events: list[RegistryEvent] = []
        self.core: RegistryCore | None = None

    async def publish(self, event: RegistryEvent) -> None:
        self.events.append(event)
        assert self.core is not None
        asyncio.get_running_loop().call_soon(self.core.on_event, event)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def make_core(tmp_path: object, log: LoopbackLog, clock: Clock | None = None) -> RegistryCore:
    core = RegistryCore(
        ArtifactStore(str(tmp_path)), "k", log.publish, clock=clock or Clock(), write_timeout_s=5
    )
    core.caught_up = True
    log.core = core
    return core


def lineage(trigger: str | None = None) -> Lineage:
    return Lineage(featureset="loans", featureset_version=1, examples=1000, trigger_id=trigger)


async def test_replaying_the_log_rebuilds_identical_state(tmp_path: object) -> None:
    log = LoopbackLog()
    core = make_core(tmp_path, log)
    for i in range(3):
        await core.register(
            Registration(name="loans", metrics={"accuracy": 0.9 + i / 100}, lineage=lineage()),
            f"model-{i}".encode(),
        )
    await core.set_alias("loans", "champion", 1, actor="alice", reason="first")
    await core.set_alias("loans", "champion", 2, actor="bob", reason="better")
    await core.set_alias("loans", "challenger", 3, actor="training")
    await core.rollback("loans", actor="ops", reason="v2 misbehaves")
    await core.delete_alias("loans", "challenger", actor="ops")
    await core.reject("loans", 3, actor="training", reason="worse than champion")

    replayed = RegistryState()
    for event in log.events:
        assert replayed.apply(event).applied
    assert replayed.snapshot() == core.state.snapshot()
    model = replayed.models["loans"]
    assert model.aliases == {"champion": 1}
    assert [c.kind for c in model.history] == ["set", "set", "set", "rolled_back", "deleted"]
    assert model.versions[2].status == "rejected"

    # Replaying the same log twice (e.g. a duplicate delivery) changes nothing.
    for event in log.events:
        assert not replayed.apply(event).applied
    assert replayed.snapshot() == core.state.snapshot()


def _registered(version: int, event_id: str, trigger: str | None = None) -> RegistryEvent:
    return RegistryEvent(
        event_id=event_id,
        kind=RegistryEventKind.REGISTERED,
        model_name="m",
        version=version,
        actor="a",
        trigger=trigger,
        at=T0,
        sha256="a" * 64,
        signature="b" * 64,
        size_bytes=1,
    )


def test_conflicting_writers_are_resolved_by_log_order() -> None:
    state = RegistryState()
    assert state.apply(_registered(1, "replica-a")).applied
    lost = state.apply(_registered(1, "replica-b"))
    assert not lost.applied and "conflict" in lost.reason
    assert state.apply(_registered(3, "gap")).applied is False  # numbers stay contiguous
    assert state.apply(_registered(2, "t1", trigger="retrain-7")).applied
    dup = state.apply(_registered(3, "t1-again", trigger="retrain-7"))
    assert not dup.applied and "duplicate" in dup.reason
    assert [v.version for v in state.models["m"].versions] == [1, 2]


def test_alias_compare_and_set_in_the_log() -> None:
    state = RegistryState()
    state.apply(_registered(1, "r1"))
    state.apply(_registered(2, "r2"))

    def alias_set(event_id: str, version: int, previous: int | None) -> RegistryEvent:
        return RegistryEvent(
            event_id=event_id,
            kind=RegistryEventKind.ALIAS_SET,
            model_name="m",
            version=version,
            alias="champion",
            previous_version=previous,
            actor="a",
            at=T0,
        )

    assert state.apply(alias_set("a1", 1, None)).applied
    # A writer that had not seen a1 yet expected the alias unset: its change is ignored.
    assert not state.apply(alias_set("a2", 2, None)).applied
    assert state.models["m"].aliases["champion"] == 1
    assert state.apply(alias_set("a3", 2, 1)).applied
    assert state.models["m"].aliases["champion"] == 2


async def test_same_trigger_twice_gives_one_version(tmp_path: object) -> None:
    log = LoopbackLog()
    core = make_core(tmp_path, log)
    first, created = await core.register(
        Registration(name="loans", lineage=lineage("retrain-42")), b"one"
    )
    again, created_again = await core.register(
        Registration(name="loans", lineage=lineage("retrain-42")), b"two"
    )
    assert created and not created_again
    assert again.version == first.version == 1
    keyed, _ = await core.register(Registration(name="loans", idempotency_key="k-1"), b"three")
    keyed_again, _ = await core.register(Registration(name="loans", idempotency_key="k-1"), b"3")
    assert keyed.version == keyed_again.version == 2
    assert core.state.models["loans"].latest == 2
    assert sum(e.kind is RegistryEventKind.REGISTERED for e in log.events) == 2


async def test_concurrent_registrations_get_distinct_numbers(tmp_path: object) -> None:
    log = LoopbackLog()
    core = make_core(tmp_path, log)
    results = await asyncio.gather(
        *(core.register(Registration(name="m"), f"a{i}".encode()) for i in range(10))
    )
    assert sorted(v.version for v, _ in results) == list(range(1, 11))


async def test_rollback_previous_and_as_of(tmp_path: object) -> None:
    clock = Clock()
    core = make_core(tmp_path, LoopbackLog(), clock)
    for i in range(3):
        await core.register(Registration(name="m"), f"m{i}".encode())
    await core.set_alias("m", "champion", 1)
    after_v1 = clock.now + timedelta(seconds=1)
    await core.set_alias("m", "champion", 2)
    await core.set_alias("m", "champion", 3)
    change, version = await core.rollback("m")
    assert (change.kind, change.version, change.previous_version) == ("rolled_back", 2, 3)
    assert version.aliases == ["champion"]
    change, _ = await core.rollback("m", as_of=after_v1)
    assert change.version == 1
    with pytest.raises(FailedPreconditionError, match="pointed at no version"):
        await core.rollback("m", as_of=T0)
    with pytest.raises(FailedPreconditionError, match="already points"):
        await core.rollback("m", as_of=after_v1)


async def test_errors_name_the_problem(tmp_path: object) -> None:
    core = make_core(tmp_path, LoopbackLog())
    await core.register(Registration(name="m"), b"x")
    with pytest.raises(NotFoundError, match="not registered"):
        core.get("nope")
    with pytest.raises(NotFoundError, match="no version 9"):
        core.get("m", 9)
    with pytest.raises(NotFoundError, match="no 'champion' alias"):
        core.get("m", alias="champion")
    with pytest.raises(InvalidArgumentError, match="champion, challenger, shadow"):
        await core.set_alias("m", "prod", 1)
    with pytest.raises(InvalidArgumentError, match="empty"):
        await core.register(Registration(name=""), b"x")
    with pytest.raises(InvalidArgumentError, match="sha256 mismatch"):
        await core.register(Registration(name="m", sha256="0" * 64), b"y")
    with pytest.raises(FailedPreconditionError, match="not 1"):
        await core.set_alias("m", "champion", 1, expected_version=1)
    with pytest.raises(FailedPreconditionError, match="nothing to roll back"):
        await core.rollback("m")
