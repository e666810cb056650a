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
