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


SHUTDOWN_GRACE_S = 20.0
"""How long a service may take to stop once told to (SIGTERM): below Kubernetes' default
``terminationGracePeriodSeconds`` of 30, so what it was still waiting on is logged
before the kubelet's SIGKILL would cut it short without a word."""

EXIT_FORCED_STOP = 1
"""Exit status when the service had to be cancelled after :data:`SHUTDOWN_GRACE_S`."""


def awaiting(task: asyncio.Task[object]) -> str:
    """Where ``task`` is suspended: its chain of awaits, outermost first
    (``Task.get_stack`` shows only the outermost coroutine's frame)."""
    where: list[str] = []
    step: object = task.get_coro()
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            where.append(f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})")
        step = getattr(step, "cr_await", None) or getattr(step, "gi_yieldfrom", None)
    return " -> ".join(where) or repr(task)


async def _stop_within(
    name: str,
    stop: asyncio.Event,
    work: asyncio.Future[None],
    grace_s: float,
    forcing: Callable[[], None],
) -> None:
    """Once ``stop`` is set, give ``work`` ``grace_s`` to finish; past that, log every
    task still pending and where it waits, call ``forcing`` and cancel ``work``."""
    await stop.wait()
    done, _ = await asyncio.wait({work}, timeout=grace_s)
    if done:
        return
    pending = sorted(
        (t for t in asyncio.all_tasks() if not t.done() and t is not asyncio.current_task()),
        key=lambda t: t.get_name(),
    )
    log.error(
        "%s did not stop within %gs of being told to; cancelling it. Still waiting:\n%s",
        name,
        grace_s,
        "\n".join(f"  {t.get_name()}: {awaiting(t)}" for t in pending),
    )
    forcing()
    work.cancel()
    await asyncio.wait({work}, timeout=5.0)
    if not work.done():
        log.error("%s did not stop when cancelled either; exiting", name)
        logging.shutdown()
        os._exit(EXIT_FORCED_STOP)


def run_service(
    name: str,
    main: Callable[[asyncio.Event], Awaitable[None]],
    *,
    shutdown_grace_s: float = SHUTDOWN_GRACE_S,
) -> int:
    """Run ``main(stop)`` until it returns; SIGINT / SIGTERM set ``stop``.

    A :class:`DriftlineError` that escapes (typically a dependency that never
    answered during the start-up wait) is printed as one clear line and gives
    a non-zero exit status instead of a traceback. A service that has not
    returned ``shutdown_grace_s`` after ``stop`` is cancelled, with every task it
    was still waiting on logged, and exits with :data:`EXIT_FORCED_STOP`.
    """
    forced = False

    def forcing() -> None:
        nonlocal forced
        forced = True

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        work = asyncio.ensure_future(main(stop))
        if isinstance(work, asyncio.Task):
            work.set_name(name)
        watchdog = asyncio.create_task(
            _stop_within(name, stop, work, shutdown_grace_s, forcing), name="shutdown-watchdog"
        )
        try:
            await work
        except asyncio.CancelledError:
            if not forced:
                raise
        finally:
            watchdog.cancel()

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as loop_runner:
            loop_runner.run(runner())
    except DriftlineError as exc:
        log.error("%s cannot run: %s", name, exc.message)
        print(f"driftline {name}: {exc.message}", file=sys.stderr)
        return EXIT_DEPENDENCY if exc.retriable else 2
    return EXIT_FORCED_STOP if forced else 0


def service_main(
    name: str,
    serve: Callable[[PlatformSettings, asyncio.Event], Awaitable[None]],
    *,
    quiet_loggers: Sequence[str] = (),
    gc_thresholds: tuple[int, int, int] = GC_THRESHOLDS,
    shutdown_grace_s: float = SHUTDOWN_GRACE_S,
) -> int:
    """The whole ``python -m driftline.<name>``: settings, logs, traces, run, exit status.

    Bad settings or declarations (:class:`ConfigError`, which feature-set and
    model-spec errors are) print the file and line at fault and exit 2 before
    anything starts; ``quiet_loggers`` are held at WARNING (chatty libraries);
    ``gc_thresholds`` trade collector CPU (:data:`GC_THRESHOLDS`) against the
    longest pause (:data:`LATENCY_GC_THRESHOLDS`); ``shutdown_grace_s`` as for
    :func:`run_service`.
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
        return run_service(
            name, lambda stop: serve(settings, stop), shutdown_grace_s=shutdown_grace_s
        )
    except ConfigError as exc:
        print(f"driftline {name}: {exc}", file=sys.stderr)
        return 2
