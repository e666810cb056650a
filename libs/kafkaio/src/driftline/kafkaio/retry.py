"""Waiting out errors of the world: exponential back-off with jitter, by tenacity.

Every consumer retries what :func:`~driftline.kafkaio.is_record_fault` says the
world caused (broker, Redis or registry down) until it goes through: giving up
would lose records.  The delays grow so that an outage is not hammered, stop
growing at a cap so that recovery is noticed soon, and are jittered so that the
replicas and partitions that failed together do not all try again at the same
instant when the broker comes back.

:func:`retry_io` is the loop for code that awaits its retries;
:func:`backoff` and :func:`delay_before` are for a loop that schedules them itself
(training holds many retrain requests, each on its own schedule).

>>> wait = backoff(first_s=0.2, max_s=5.0)
>>> 0.1 <= delay_before(wait, 1) <= 0.2, 2.5 <= delay_before(wait, 30) <= 5.0
(True, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.wait import wait_base, wait_exponential, wait_random_exponential

from driftline.kafkaio.record_faults import is_record_fault

__all__ = ["backoff", "delay_before", "of_the_world", "retry_io"]

T = TypeVar("T")

_NO_RETRYING = AsyncRetrying()
"""The retry object a bare :class:`RetryCallState` must name (wait strategies ignore it)."""


def backoff(first_s: float, max_s: float) -> wait_base:
    """Exponential back-off with "equal jitter", as a tenacity wait strategy.

    Retry ``n`` (1 after the first failure) waits a time drawn uniformly from
    ``[d/2, d]`` where ``d = min(first_s * 2**(n-1), max_s)``: the fixed half keeps
    the delays growing (an outage is not hammered), the random half spreads out
    the processes that failed together, at the cap too (where a jitter added
    before capping, as in ``wait_exponential_jitter``, would vanish).
    """
    if not 0 < first_s <= max_s:
        raise ValueError(f"a back-off needs 0 < first_s <= max_s, got {first_s} and {max_s}")
    half, half_cap = first_s / 2, max_s / 2
    return wait_exponential(multiplier=half, max=half_cap) + wait_random_exponential(
        multiplier=half, max=half_cap
    )


def delay_before(wait: wait_base, retry: int) -> float:
    """The delay ``wait`` gives before retry number ``retry`` (1 after the first failure)."""
    if retry < 1:
        raise ValueError(f"retries are numbered from 1, got {retry}")
    state = RetryCallState(retry_object=_NO_RETRYING, fn=None, args=(), kwargs={})
    state.attempt_number = retry
    return wait(state)


def of_the_world(exc: Exception) -> bool:
    """The default of :func:`retry_io`: retry what the records at hand did not cause."""
    return not is_record_fault(exc)


class _Stopped(Exception):
    """The stop event ended a back-off (never leaves :func:`retry_io`)."""


async def retry_io(
    step: Callable[[], Awaitable[T]],
    *,
    first_s: float,
    max_s: float,
    on_retry: Callable[[Exception, float], Awaitable[None] | None],
    retryable: Callable[[Exception], bool] = of_the_world,
    stop: asyncio.Event | None = None,
) -> T:
    """Await ``step()`` until it returns, retrying the failures ``retryable`` accepts.

    Each retried failure is first passed to ``on_retry(exc, delay_s)`` (a function
    or coroutine function: the caller's metrics, health report and log line), then
    waited out by :func:`backoff` ``(first_s, max_s)``.  A failure ``retryable``
    refuses (by default a record fault: retrying the same records cannot help) is
    raised at once, unreported; so is anything not an :class:`Exception`
    (cancellation).

    When ``stop`` is given and set, the back-off under way ends at once and the
    failure just reported is raised instead of trying again.
    """
    last: list[Exception] = []

    async def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if not isinstance(exc, Exception):  # retry_if_exception below retries only these
            raise RuntimeError(f"tenacity retried a non-exception outcome: {exc!r}")
        last[:] = [exc]
        reported = on_retry(exc, state.upcoming_sleep)
        if inspect.isawaitable(reported):
            await reported

    async def sleep(seconds: float) -> None:
        if stop is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if stop.is_set():
            raise _Stopped

    retrying = AsyncRetrying(
        wait=backoff(first_s, max_s),
        retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and retryable(exc)),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )

    async def attempt() -> T:
        # Awaited here: tenacity awaits only what it recognises as a coroutine function,
        # and would return the coroutine of a ``lambda: send(...)`` unawaited.
        return await step()

    try:
        return await retrying(attempt)
    except _Stopped:
        raise last[0] from None
