"""``driftline`` console script (``python -m driftline.cli``)."""

from __future__ import annotations

import sys

from driftline.cli.app import app
from driftline.settings import ConfigError


def main() -> None:
    """Run the CLI; a configuration error prints its message and exits 2, no traceback."""
    try:
        app()
    except ConfigError as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
