"""``python -m driftline.monitoring`` (or ``driftline run monitoring``)."""

from __future__ import annotations

import asyncio
import sys

from driftline.monitoring.service import serve
from driftline.runtime import run_service
from driftline.settings import ConfigError, load_settings
from driftline.telemetry import configure_logging, configure_tracing


def main() -> int:
    """Build settings, set up telemetry, run until SIGTERM."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"driftline monitoring: {exc}", file=sys.stderr)
        return 2
    configure_logging("monitoring", settings.telemetry)
    configure_tracing("monitoring", settings.telemetry)

    async def main_task(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    return run_service("monitoring", main_task)


if __name__ == "__main__":
    sys.exit(main())
