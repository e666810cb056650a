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


async def latency(call: Callable[[], Awaitable[Any]], n: int, warmup: int = 50) -> dict[str, Any]:
    """Await ``call`` ``warmup`` times, then ``n`` times timed: request count, p50 and p99 (ms)."""
    for _ in range(warmup):
        await call()
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        lat.append(time.perf_counter() - t)
    return {
        "requests": n,
        "p50_ms": round(statistics.median(lat) * 1000, 3),
        "p99_ms": round(pct(lat, 0.99) * 1000, 3),
    }
