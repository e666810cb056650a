"""The start-up wait for Redis every service that uses it shares (``driftline.runtime``)."""

from __future__ import annotations

import pytest

from driftline.contracts.errors import UnavailableError
from driftline.runtime import wait_for_redis
from driftline.settings import RedisSettings


async def test_returns_once_a_ping_succeeds_after_failures() -> None:
    calls = 0

    async def ping() -> bool:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionRefusedError("connection refused")
        return True

    await wait_for_redis(ping, RedisSettings(startup_wait_s=5), every_s=0.01)
    assert calls == 3


async def test_gives_up_after_the_start_up_wait_naming_the_server_and_the_fix() -> None:
    calls = 0

    async def ping() -> bool:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("connection refused")

    settings = RedisSettings(host="10.9.8.7", port=6390, startup_wait_s=0.05)
    with pytest.raises(UnavailableError) as caught:
        await wait_for_redis(ping, settings, every_s=0.01)
    message = caught.value.message
    assert "10.9.8.7:6390" in message and "connection refused" in message
    assert "driftline infra up" in message and "DRIFTLINE_REDIS__HOST" in message
    assert calls >= 2  # retried until the deadline, not given up at the first refusal
