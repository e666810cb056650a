"""The online-store conformance suite on the in-memory store and on a plug-in store.

The plug-in (``tests/support/sqlite_store.py``) is registered through the public
extension point and chosen by ``features.online_store``, as a user's store would be.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from support import sqlite_store

from driftline.online_store import (
    InMemoryOnlineStore,
    OnlineStore,
    create_online_store,
    unregister_online_store,
)
from driftline.online_store.checks import ALL_CHECKS, GENERATION_MARKER_CHECKS
from driftline.settings import PlatformSettings

pytestmark = pytest.mark.unit

Check = Callable[[OnlineStore], Awaitable[None]]


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
async def test_in_memory_store(check: Check) -> None:
    await check(InMemoryOnlineStore())


@pytest.mark.parametrize("check", GENERATION_MARKER_CHECKS, ids=lambda c: c.__name__)
async def test_in_memory_store_generation_marker(check: Check) -> None:
    await check(InMemoryOnlineStore())


@pytest.fixture
def sqlite_type() -> Iterator[None]:
    sqlite_store.register()
    yield
    unregister_online_store("sqlite")


@pytest.mark.parametrize(
    "check", [*ALL_CHECKS, *GENERATION_MARKER_CHECKS], ids=lambda c: c.__name__
)
async def test_a_store_registered_as_a_plug_in_and_chosen_by_the_setting(
    check: Check, sqlite_type: None, tmp_path: Path
) -> None:
    settings = PlatformSettings(
        features={"online_store": {"type": "sqlite", "path": str(tmp_path / "online.db")}}
    )
    store = create_online_store(settings)
    assert isinstance(store, sqlite_store.SqliteOnlineStore)
    assert store.where == f"SQLite at {tmp_path / 'online.db'}"
    try:
        await check(store)
    finally:
        await store.close()


def test_stored_values_decode_the_same_at_once_and_one_by_one() -> None:
    from driftline.online_store.redis_store import _decode_at_once, _decode_one_by_one

    plain: list[list[bytes | None]] = [
        [b"1700000000000001|0.1", b"1700000000000002|-42", None, b'1700000000000003|"a,b"'],
        [b"1700000000000004|true", b"", b"1700000000000005|null", b"1700000000000006|1e-07"],
    ]
    flat = _decode_at_once(plain)
    assert flat == _decode_one_by_one(plain)
    assert flat == [
        1700000000000001, 0.1, 1700000000000002, -42, None, None, 1700000000000003, "a,b",
        1700000000000004, True, None, None, 1700000000000005, None, 1700000000000006, 1e-07,
    ]  # fmt: skip
    assert type(flat[3]) is int and type(flat[9]) is bool
    # A '|' inside a string, or a non-JSON number, cannot be parsed at once: the
    # caller falls back, and the slow path reads them right.
    for odd, value in ((b'1700000000000007|"x|y"', "x|y"), (b"1700000000000008|NaN", None)):
        rows: list[list[bytes | None]] = [[b"1700000000000001|1", odd]]
        assert _decode_at_once(rows) is None
        decoded = _decode_one_by_one(rows)
        assert decoded[:3] == [1700000000000001, 1, int(odd.split(b"|")[0])]
        if value is None:
            assert decoded[3] != decoded[3]  # NaN
        else:
            assert decoded[3] == value
