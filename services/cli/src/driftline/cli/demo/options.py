"""The knobs of one ``driftline demo`` run (the command's options, as one value)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DemoOptions"]


@dataclass(frozen=True)
class DemoOptions:
    """The knobs of one demo run."""

    events: int = 12_000
    rate: float = 100.0
    drift_at: int = 6_000
    return_at: int | None = None
    """Where the old rule comes back (None: no recurring concept)."""
    label_delay: int = 200
    seed: int = 42
    model: str = "loans"
    concurrency: int = 32
    report: Path = Path(".driftline/demo/report.md")
    keep_running: bool = False
    timeout_s: float = 900.0
    settle_s: float = 20.0
    service_timeout_s: float = 90.0
