"""``driftline eval-drift``: detector quality on synthetic streams with known drift points.

The evaluation lives with the monitoring service (it runs the same detectors and
retraining policy); the CLI runs it as its own process, as it runs services.
"""

from __future__ import annotations

import os
import sys

import typer


def eval_drift(ctx: typer.Context) -> None:
    """Run the configured drift detectors and retraining policy over SEA, Agrawal, STAGGER,
    Hyperplane and stationary controls; report delay, false alarms and misses.

    Every option is passed through; see `driftline eval-drift --help-eval`.
    """
    args = list(ctx.args)
    if "--help-eval" in args:
        args = ["--help"]
    os.execv(sys.executable, [sys.executable, "-m", "driftline.monitoring.eval_drift", *args])


def register_eval_drift(app: typer.Typer) -> None:
    """Add ``eval-drift`` to the root command."""
    app.command(
        "eval-drift",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(eval_drift)
