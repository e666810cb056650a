"""Running a service process: signals, start-up failures, exit codes."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from driftline.contracts.errors import DriftlineError

log = logging.getLogger(__name__)

EXIT_DEPENDENCY = 3
"""Exit status when a dependency (Kafka, Redis, a peer service) stayed unreachable."""


def run_service(name: str, main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``main(stop)`` until it returns; SIGINT / SIGTERM set ``stop``.

    A :class:`DriftlineError` that escapes (typically a dependency that never
    answered during the start-up wait) is printed as one clear line and gives
    a non-zero exit status instead of a traceback.
    """

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        asyncio.run(runner())
    except DriftlineError as exc:
        log.error("%s cannot run: %s", name, exc.message)
        print(f"driftline {name}: {exc.message}", file=sys.stderr)
        return EXIT_DEPENDENCY if exc.retriable else 2
    return 0
