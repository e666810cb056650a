"""Running a service process: signals, start-up failures, exit codes."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from driftline.contracts.errors import DriftlineError, UnavailableError
from driftline.settings import ConfigError, PlatformSettings, RedisSettings, load_settings
from driftline.telemetry import configure_logging, configure_tracing

log = logging.getLogger(__name__)

GC_THRESHOLDS = (100_000, 50, 100)
"""Cyclic-GC thresholds of a service process.  Python's default (700 allocations
per young collection) made the collector ~20 % of the features worker's CPU at
4,000 events/s: every batch allocates far more than 700 short-lived objects,
and each young collection walked them all again.  Reference counting frees
almost everything here; cycles are still collected, just less often."""

LATENCY_GC_THRESHOLDS = (20_000, 20, 100)
"""Cyclic-GC thresholds of a service that answers RPCs under a deadline (serving).
A young collection walks every container allocated since the last one that is
still alive, and grpc.aio's server leaves a reference cycle behind per call (the
closure scope of its method-handler lookup with its call details and metadata:
five objects, freed only by the collector). At 100,000 a young collection found
71,262 cyclic objects and held the event loop for 101 ms under 1,400 Predicts/s,
long enough for queued feature reads to miss their 100 ms budget (6-12 failed
requests in 10 s). At 20,000 no collection took over 10 ms in the same bench,
with the same throughput."""

EXIT_DEPENDENCY = 3
"""Exit status when a dependency (Kafka, Redis, a peer service) stayed unreachable."""


async def wait_for_redis(
    ping: Callable[[], Awaitable[object]], settings: RedisSettings, *, every_s: float = 0.5
) -> None:
    """Return once ``ping`` (a Redis client's) succeeds; :class:`UnavailableError` naming
    the server and what to do when it has not within ``settings.startup_wait_s``."""
    deadline = time.monotonic() + settings.startup_wait_s
    while True:
        try:
            await ping()
            return
        except Exception as exc:  # refused, reset, timed out, loading, auth: not answering
            last = exc
        if time.monotonic() >= deadline:
            raise UnavailableError(
                f"Redis at {settings.host}:{settings.port} did not answer PING within "
                f"{settings.startup_wait_s:.0f}s ({last}). Start it with `driftline infra up` "
                "or set DRIFTLINE_REDIS__HOST / DRIFTLINE_REDIS__PORT."
            )
        await asyncio.sleep(every_s)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed, unless ``DRIFTLINE_EVENT_LOOP=asyncio``.

    grpc.aio, aiokafka and uvicorn all run on it. Measured here on a bare
    grpc.aio echo server: 20 % less CPU per call (327 against 410 µs) and a
    12 % lower round trip, because every gRPC call takes the loop through ~14
    iterations and uvloop's are cheaper.
    """
    if os.environ.get("DRIFTLINE_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, or a trimmed install
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


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
        with asyncio.Runner(loop_factory=loop_factory()) as loop_runner:
            loop_runner.run(runner())
    except DriftlineError as exc:
        log.error("%s cannot run: %s", name, exc.message)
        print(f"driftline {name}: {exc.message}", file=sys.stderr)
        return EXIT_DEPENDENCY if exc.retriable else 2
    return 0


def service_main(
    name: str,
    serve: Callable[[PlatformSettings, asyncio.Event], Awaitable[None]],
    *,
    quiet_loggers: Sequence[str] = (),
    gc_thresholds: tuple[int, int, int] = GC_THRESHOLDS,
) -> int:
    """The whole ``python -m driftline.<name>``: settings, logs, traces, run, exit status.

    Bad settings or declarations (:class:`ConfigError`, which feature-set and
    model-spec errors are) print the file and line at fault and exit 2 before
    anything starts; ``quiet_loggers`` are held at WARNING (chatty libraries);
    ``gc_thresholds`` trade collector CPU (:data:`GC_THRESHOLDS`) against the
    longest pause (:data:`LATENCY_GC_THRESHOLDS`).
    """
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"driftline {name}: {exc}", file=sys.stderr)
        return 2
    configure_logging(name, settings.telemetry)
    quiet = max(logging.WARNING, logging.getLogger().level)
    for logger in quiet_loggers:
        logging.getLogger(logger).setLevel(quiet)
    configure_tracing(name, settings.telemetry)
    gc.set_threshold(*gc_thresholds)
    try:
        return run_service(name, lambda stop: serve(settings, stop))
    except ConfigError as exc:
        print(f"driftline {name}: {exc}", file=sys.stderr)
        return 2
