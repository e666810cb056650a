"""The one retry of errors of the world: delays grow, are jittered and capped; record faults
are raised at once; ``stop`` ends a back-off."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, ProducerFenced

from driftline.kafkaio import backoff, delay_before, retry_io


def _draws(first_s: float, max_s: float, retry: int, n: int = 200) -> list[float]:
    wait = backoff(first_s, max_s)
    return [delay_before(wait, retry) for _ in range(n)]


def test_delays_grow_stay_within_their_window_and_are_capped() -> None:
    random.seed(16)
    first_s, max_s = 0.5, 10.0
    lows = []
    for retry in range(1, 12):
        ceiling = min(first_s * 2 ** (retry - 1), max_s)
        draws = _draws(first_s, max_s, retry)
        # Equal jitter: half the exponential delay fixed, the other half random.
        assert all(ceiling / 2 <= d <= ceiling for d in draws), (retry, min(draws), max(draws))
        lows.append(min(draws))
    # The fixed half doubles until the cap (0.5, 1, 2, 4, 8, then 10 s for good).
    assert all(b > a for a, b in itertools.pairwise(lows[:6])), lows
    assert max(max(_draws(first_s, max_s, retry)) for retry in (6, 20, 200)) <= max_s
    assert delay_before(backoff(first_s, max_s), 10_000) <= max_s  # no overflow far out


def test_delays_are_jittered_at_every_retry_including_at_the_cap() -> None:
    random.seed(16)
    for retry in (1, 3, 30):
        draws = _draws(0.2, 5.0, retry)
        assert len(set(draws)) > len(draws) // 2, f"retry {retry}: too few distinct delays"
        # Spread over the window, not bunched: replicas failing together spread out.
        ceiling = min(0.2 * 2 ** (retry - 1), 5.0)
        assert max(draws) - min(draws) > ceiling / 4


def test_a_seeded_random_source_replays_the_same_delays() -> None:
    random.seed(7)
    first = [delay_before(backoff(0.2, 5.0), n) for n in range(1, 8)]
    random.seed(7)
    again = [delay_before(backoff(0.2, 5.0), n) for n in range(1, 8)]
    random.seed(8)
    other = [delay_before(backoff(0.2, 5.0), n) for n in range(1, 8)]
    assert first == again
    assert first != other


def test_a_back_off_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="0 < first_s <= max_s"):
        backoff(0.0, 5.0)
    with pytest.raises(ValueError, match="0 < first_s <= max_s"):
        backoff(6.0, 5.0)
    with pytest.raises(ValueError, match="numbered from 1"):
        delay_before(backoff(0.1, 1.0), 0)


async def test_errors_of_the_world_are_reported_waited_out_and_retried() -> None:
    failures = [KafkaConnectionError("broker down")] * 3
    calls = 0
    reported: list[tuple[str, float]] = []

    async def step() -> str:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return "sent"

    started = time.monotonic()
    result = await retry_io(
        step,
        first_s=0.02,
        max_s=0.05,
        on_retry=lambda exc, delay: reported.append((type(exc).__name__, delay)),
    )
    assert result == "sent" and calls == 4
    assert [name for name, _ in reported] == ["KafkaConnectionError"] * 3
    delays = [d for _, d in reported]
    assert 0.01 <= delays[0] <= 0.02 and 0.02 <= delays[1] <= 0.04 and 0.025 <= delays[2] <= 0.05
    assert time.monotonic() - started >= sum(delays) * 0.9  # the delays were slept


async def test_a_lambda_returning_a_coroutine_is_awaited_and_retried() -> None:
    failures = [KafkaConnectionError("broker down")]
    sent: list[str] = []

    async def send(value: str) -> None:
        if failures:
            raise failures.pop(0)
        sent.append(value)

    await retry_io(lambda: send("d1"), first_s=0.01, max_s=0.01, on_retry=lambda e, d: None)
    assert sent == ["d1"] and failures == []


async def test_an_async_report_is_awaited() -> None:
    failures = [OSError("connection refused")]
    seen: list[str] = []

    async def report(exc: Exception, delay: float) -> None:
        await asyncio.sleep(0)
        seen.append(str(exc))

    async def step() -> None:
        if failures:
            raise failures.pop(0)

    await retry_io(step, first_s=0.01, max_s=0.01, on_retry=report)
    assert seen == ["connection refused"]


async def test_a_record_fault_is_raised_at_once_unreported() -> None:
    calls = 0
    reported: list[Exception] = []

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise MessageSizeTooLargeError("the message is too large")

    with pytest.raises(MessageSizeTooLargeError, match="too large"):
        await retry_io(step, first_s=0.01, max_s=0.01, on_retry=lambda exc, _: reported.append(exc))
    assert calls == 1 and reported == []


async def test_a_failure_the_caller_refuses_to_retry_is_raised_at_once() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise ProducerFenced()

    with pytest.raises(ProducerFenced):
        await retry_io(
            step,
            first_s=0.01,
            max_s=0.01,
            on_retry=lambda exc, _: pytest.fail(f"reported {exc!r}"),
            retryable=lambda exc: not isinstance(exc, ProducerFenced),
        )
    assert calls == 1


async def test_cancellation_is_never_retried() -> None:
    async def step() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry_io(
            step,
            first_s=0.01,
            max_s=0.01,
            on_retry=lambda exc, _: pytest.fail(f"reported {exc!r}"),
            retryable=lambda exc: True,
        )


async def test_stop_ends_the_back_off_and_raises_the_failure_just_reported() -> None:
    stop = asyncio.Event()
    calls = 0
    reported: list[float] = []

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise KafkaConnectionError("broker down")

    def report(exc: Exception, delay: float) -> None:
        reported.append(delay)
        asyncio.get_running_loop().call_later(0.05, stop.set)

    started = time.monotonic()
    with pytest.raises(KafkaConnectionError, match="broker down"):
        await retry_io(step, first_s=30.0, max_s=60.0, on_retry=report, stop=stop)
    assert time.monotonic() - started < 5.0  # not the 15-30 s back-off
    assert calls == 1 and len(reported) == 1


async def test_a_stop_already_set_raises_after_one_report_without_waiting() -> None:
    stop = asyncio.Event()
    stop.set()
    reported: list[Exception] = []

    async def step() -> None:
        raise OSError("connection refused")

    started = time.monotonic()
    with pytest.raises(OSError, match="connection refused"):
        await retry_io(
            step, first_s=30.0, max_s=60.0, on_retry=lambda e, _: reported.append(e), stop=stop
        )
    assert time.monotonic() - started < 5.0 and len(reported) == 1
