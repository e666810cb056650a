"""What the benchmarks measure with: CPU time of a process, percentiles, timed loops."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``).

    A process's CPU per unit of work does not depend on what else the machine
    runs, unlike rates and latencies, so it is reported next to them.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def interleaved(
    calls: dict[str, Callable[[], Awaitable[Any]]], n: int, rounds: int = 5, warmup: int = 50
) -> dict[str, dict[str, Any]]:
    """Each of ``calls`` awaited ``n`` times, one after another (concurrency 1), in turns.

    The calls take turns, ``n / rounds`` each per round, so that a slow spell of
    the shared machine falls on all of them alike rather than on whichever was
    measured then: the ratios between them hold even when the absolute times do
    not. Per call: request count, p50 and p99 (ms).
    """
    for call in calls.values():
        for _ in range(warmup):
            await call()
    lat: dict[str, list[float]] = {name: [] for name in calls}
    per_round = max(1, n // rounds)
    for r in range(rounds):
        for name, call in calls.items():
            for _ in range(per_round if r < rounds - 1 else n - per_round * (rounds - 1)):
                t = time.perf_counter()
                await call()
                lat[name].append(time.perf_counter() - t)
    return {
        name: {
            "requests": len(xs),
            "p50_ms": round(statistics.median(xs) * 1000, 3),
            "p99_ms": round(pct(xs, 0.99) * 1000, 3),
        }
        for name, xs in lat.items()
    }
