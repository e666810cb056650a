"""The conformance suite every :class:`~driftline.online_store.base.OnlineStore` passes.

Each check is an async function taking a fresh, empty store.  Driftline's tests
run them on the in-memory store, on real Redis and on a store registered as a
plug-in, so every implementation is held to the same semantics; a store of your
own runs them the same way::

    @pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
    async def test_store(check, store):
        await check(store)

:data:`ALL_CHECKS` is what every store must pass; :data:`GENERATION_MARKER_CHECKS`
hold a store that declares the optional generation marker to its contract (they
fail on a store that declares none, so run them only on those that do).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from driftline.contracts.messages import FeatureValue
from driftline.online_store.base import EntityWrite, FeatureStatus, OnlineStore
from driftline.specs import FeatureSetSpec

__all__ = ["ALL_CHECKS", "GENERATION_MARKER_CHECKS", "SPEC"]

SPEC = FeatureSetSpec.model_validate(
    {
        "name": "checks",
        "version": 1,
        "entity": "e",
        "ttl": "60s",
        "fields": {
            "x": {"type": "float"},
            "s": {"type": "string"},
            "b": {"type": "bool"},
            "i": {"type": "int", "required": False},
        },
    }
)
T0 = 1_795_017_600_000_000  # µs
NOW = T0 / 1e6 + 10


async def check_round_trip_keeps_types_and_times(store: OnlineStore) -> None:
    vals: dict[str, tuple[FeatureValue, int]] = {
        "x": (1.5, T0),
        "s": ("sedan", T0),
        "b": (True, T0 + 1),
        "i": (None, T0),
    }
    await store.write(SPEC.name, [EntityWrite("e1", vals)])
    [row] = await store.read(SPEC, ["e1"], ["x", "s", "b", "i"], NOW)
    assert [(r.value, r.event_time_us, r.status) for r in row] == [
        (1.5, T0, FeatureStatus.PRESENT),
        ("sedan", T0, FeatureStatus.PRESENT),
        (True, T0 + 1, FeatureStatus.PRESENT),
        (None, T0, FeatureStatus.PRESENT),
    ]
    assert type(row[0].value) is float and type(row[2].value) is bool
    # Numbers of every shape, read for several entities at once (one call).
    numbers: dict[str, tuple[FeatureValue, int]] = {
        "x": (-3.5e-05, T0),
        "i": (-42, T0),
        "s": ("12", T0),
        "b": (False, T0),
    }
    await store.write(SPEC.name, [EntityWrite("e2", numbers), EntityWrite("e3", {"x": (3.0, T0)})])
    rows = await store.read(SPEC, ["e2", "e3", "e1"], ["x", "i", "s", "b"], NOW)
    got = [[(r.value, type(r.value).__name__) for r in row] for row in rows]
    assert got[0] == [(-3.5e-05, "float"), (-42, "int"), ("12", "str"), (False, "bool")]
    assert got[1][0] == (3.0, "float")
    assert got[2][0] == (1.5, "float")


async def check_unknown_entity_and_feature_are_missing(store: OnlineStore) -> None:
    await store.write(SPEC.name, [EntityWrite("e1", {"x": (1.0, T0)})])
    rows = await store.read(SPEC, ["nobody", "e1"], ["x", "s"], NOW)
    assert [[r.status for r in row] for row in rows] == [
        [FeatureStatus.MISSING, FeatureStatus.MISSING],
        [FeatureStatus.PRESENT, FeatureStatus.MISSING],
    ]
    assert rows[0][0].value is None and rows[0][0].event_time_us is None


async def check_older_event_never_overwrites_newer(store: OnlineStore) -> None:
    await store.write(SPEC.name, [EntityWrite("e1", {"x": (2.0, T0 + 5), "s": ("new", T0 + 5)})])
    await store.write(SPEC.name, [EntityWrite("e1", {"x": (1.0, T0), "s": ("old", T0 + 9)})])
    [row] = await store.read(SPEC, ["e1"], ["x", "s"], NOW)
    assert [(r.value, r.event_time_us) for r in row] == [(2.0, T0 + 5), ("old", T0 + 9)]


async def check_same_event_time_overwrites(store: OnlineStore) -> None:
    await store.write(SPEC.name, [EntityWrite("e1", {"x": (2.0, T0)})])
    await store.write(SPEC.name, [EntityWrite("e1", {"x": (3.0, T0)})])
    [[r]] = await store.read(SPEC, ["e1"], ["x"], NOW)
    assert r.value == 3.0


async def check_ttl_is_enforced_on_read(store: OnlineStore) -> None:
    await store.write(SPEC.name, [EntityWrite("e1", {"x": (1.0, T0)})])
    [[fresh]] = await store.read(SPEC, ["e1"], ["x"], T0 / 1e6 + 59)
    [[stale]] = await store.read(SPEC, ["e1"], ["x"], T0 / 1e6 + 61)
    assert fresh.status is FeatureStatus.PRESENT and fresh.value == 1.0
    assert stale.status is FeatureStatus.STALE and stale.value is None
    assert stale.event_time_us == T0


async def check_batches_keep_request_order_and_duplicates(store: OnlineStore) -> None:
    writes = [EntityWrite(f"e{i}", {"x": (float(i), T0 + i)}) for i in range(50)]
    await store.write(SPEC.name, writes)
    ids = ["e7", "e3", "e7", "e49"]
    rows = await store.read(SPEC, ids, ["x"], NOW)
    assert [row[0].value for row in rows] == [7.0, 3.0, 7.0, 49.0]


async def check_large_writes_keep_every_entity_and_odd_strings(store: OnlineStore) -> None:
    # More entities than one write call may carry at once, strings that need
    # escaping, and per-feature monotonic outcomes within the same write.
    await store.write(
        SPEC.name, [EntityWrite(f"e{i}", {"s": ("first", T0 + 5)}) for i in range(300)]
    )
    odd = 'a|b "q" \\ é ✓ 𝄞'
    writes = [
        EntityWrite(f"e{i}", {"x": (i + 0.25, T0 + i), "s": (f"{odd}{i}", T0 + 2 * (i % 5))})
        for i in range(300)
    ]
    await store.write(SPEC.name, writes)
    rows = await store.read(SPEC, [f"e{i}" for i in range(300)], ["x", "s"], NOW)
    assert [row[0].value for row in rows] == [i + 0.25 for i in range(300)]
    # Event time T0 + 2 * (i % 5) is older than T0 + 5 for i % 5 in (0, 1, 2).
    assert [row[1].value for row in rows] == [
        "first" if i % 5 < 3 else f"{odd}{i}" for i in range(300)
    ]


async def check_feature_sets_are_separate(store: OnlineStore) -> None:
    await store.write("other", [EntityWrite("e1", {"x": (1.0, T0)})])
    [[r]] = await store.read(SPEC, ["e1"], ["x"], NOW)
    assert r.status is FeatureStatus.MISSING


async def check_empty_calls(store: OnlineStore) -> None:
    await store.write(SPEC.name, [])
    assert await store.read(SPEC, [], ["x"], NOW) == []


ALL_CHECKS: list[Callable[[OnlineStore], Awaitable[None]]] = [
    check_round_trip_keeps_types_and_times,
    check_unknown_entity_and_feature_are_missing,
    check_older_event_never_overwrites_newer,
    check_same_event_time_overwrites,
    check_ttl_is_enforced_on_read,
    check_batches_keep_request_order_and_duplicates,
    check_large_writes_keep_every_entity_and_odd_strings,
    check_feature_sets_are_separate,
    check_empty_calls,
]


async def check_generation_marker_is_claimed_once(store: OnlineStore) -> None:
    marker = store.generation_marker
    assert marker is not None, f"{type(store).__name__} declares no generation marker"
    assert await marker.read() is None  # a fresh store has none
    assert await marker.claim("first") == "first"
    # Another worker claiming later gets the token already there.
    assert await marker.claim("second") == "first"
    assert await marker.read() == "first"


async def check_generation_marker_is_no_entity_and_outlives_writes(store: OnlineStore) -> None:
    marker = store.generation_marker
    assert marker is not None, f"{type(store).__name__} declares no generation marker"
    await marker.claim("token")
    await store.write(SPEC.name, [EntityWrite(f"e{i}", {"x": (1.0, T0)}) for i in range(100)])
    assert await marker.read() == "token"
    # The marker is not readable as features of any entity.
    rows = await store.read(SPEC, ["__generation__", "generation", ""], ["x", "s"], NOW)
    assert all(r.status is FeatureStatus.MISSING for row in rows for r in row)


GENERATION_MARKER_CHECKS: list[Callable[[OnlineStore], Awaitable[None]]] = [
    check_generation_marker_is_claimed_once,
    check_generation_marker_is_no_entity_and_outlives_writes,
]
