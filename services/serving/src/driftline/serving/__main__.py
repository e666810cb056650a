"""``python -m driftline.serving`` (or ``driftline run serving``)."""

from __future__ import annotations

import sys

from driftline.runtime import LATENCY_GC_THRESHOLDS, service_main
from driftline.serving.service import serve


def main() -> int:
    """Build settings, set up logs and traces, run until SIGTERM; the exit status."""
    return service_main("serving", serve, gc_thresholds=LATENCY_GC_THRESHOLDS)


if __name__ == "__main__":
    sys.exit(main())
