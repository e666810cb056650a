"""The online-store conformance suite on the in-memory store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from driftline.features.online_store import InMemoryOnlineStore, OnlineStore
from driftline.features.store_checks import ALL_CHECKS

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
async def test_in_memory_store(check: Callable[[OnlineStore], Awaitable[None]]) -> None:
    await check(InMemoryOnlineStore())


def test_stored_values_decode_the_same_at_once_and_one_by_one() -> None:
    from driftline.features.online_store import _decode_at_once, _decode_one_by_one

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
