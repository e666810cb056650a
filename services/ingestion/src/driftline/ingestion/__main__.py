"""``python -m driftline.ingestion`` (or ``driftline run ingestion``)."""

from __future__ import annotations

import asyncio
import sys

from driftline.ingestion.service import serve
from driftline.runtime import run_service
from driftline.settings import ConfigError, load_settings
from driftline.specs import SpecError
from driftline.telemetry import configure_logging, configure_tracing


def main() -> int:
    """Build settings, set up telemetry, run until SIGTERM."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"driftline ingestion: {exc}", file=sys.stderr)
        return 2
    configure_logging("ingestion", settings.telemetry)
    configure_tracing("ingestion", settings.telemetry)

    async def main_task(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    try:
        return run_service("ingestion", main_task)
    except SpecError as exc:
        print(f"driftline ingestion: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
