"""``python -m driftline.training`` (or ``driftline run training``)."""

from __future__ import annotations

import asyncio
import sys

from driftline.runtime import run_service
from driftline.settings import ConfigError, load_settings
from driftline.specs import SpecError
from driftline.telemetry import configure_logging, configure_tracing
from driftline.training.service import serve


def main() -> int:
    """Build settings, set up telemetry, run until SIGTERM."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"driftline training: {exc}", file=sys.stderr)
        return 2
    configure_logging("training", settings.telemetry)
    configure_tracing("training", settings.telemetry)

    async def main_task(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    try:
        return run_service("training", main_task)
    except SpecError as exc:
        print(f"driftline training: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
