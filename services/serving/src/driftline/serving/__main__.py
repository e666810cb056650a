"""``python -m driftline.serving`` (or ``driftline run serving``)."""

from __future__ import annotations

import asyncio
import sys

from driftline.runtime import run_service
from driftline.serving.service import serve
from driftline.settings import ConfigError, load_settings
from driftline.telemetry import configure_logging, configure_tracing


def main() -> int:
    """Build settings, set up telemetry, serve until SIGTERM."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"driftline serving: {exc}", file=sys.stderr)
        return 2
    configure_logging("serving", settings.telemetry)
    configure_tracing("serving", settings.telemetry)

    async def main_task(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    return run_service("serving", main_task)


if __name__ == "__main__":
    sys.exit(main())
