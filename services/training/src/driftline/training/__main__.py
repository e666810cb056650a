"""``python -m driftline.training`` (or ``driftline run training``)."""

from __future__ import annotations

import sys

from driftline.runtime import service_main
from driftline.training.service import serve


def main() -> int:
    """Build settings, set up logs and traces, run until SIGTERM; the exit status."""
    return service_main("training", serve)


if __name__ == "__main__":
    sys.exit(main())
