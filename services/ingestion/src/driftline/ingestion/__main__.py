"""``python -m driftline.ingestion`` (or ``driftline run ingestion``)."""

from __future__ import annotations

import sys

from driftline.ingestion.service import serve
from driftline.runtime import service_main


def main() -> int:
    """Build settings, set up logs and traces, run until SIGTERM; the exit status."""
    return service_main("ingestion", serve)


if __name__ == "__main__":
    sys.exit(main())
