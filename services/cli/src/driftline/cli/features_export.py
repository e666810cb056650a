"""``driftline features export``: a point-in-time training set to Parquet (or CSV).

Thin wiring over :mod:`driftline.offline` (the table is the one
:func:`driftline.offline.training_set` returns in Python).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from driftline.cli.context import console, err_console, state
from driftline.contracts.errors import DriftlineError

features_app = typer.Typer(
    help="The feature log offline: point-in-time training sets.", no_args_is_help=True
)


def parse_when(value: str | None, option: str, now: datetime | None = None) -> datetime | None:
    """An ISO 8601 time (UTC unless it says otherwise) or a duration ago (``6h``, ``2d``).

    Raises :class:`typer.BadParameter` naming the option.

    >>> parse_when("2026-05-01T12:00:00", "--since").isoformat()
    '2026-05-01T12:00:00+00:00'
    >>> now = datetime(2026, 5, 2, tzinfo=UTC)
    >>> parse_when("1d", "--since", now).isoformat()
    '2026-05-01T00:00:00+00:00'
    """
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        pass
    else:
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    from driftline.specs import parse_duration

    try:
        ago = parse_duration(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither an ISO 8601 time (2026-05-01T12:00:00Z) nor a duration "
            "ago (6h, 2d)",
            param_hint=option,
        ) from None
    return (now or datetime.now(UTC)) - timedelta(seconds=ago)


class _Progress:
    """Records read, on stderr, at most once a second (and once at the end)."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, read: int, total: int) -> None:
        now = time.monotonic()
        if read < total and now - self.last < 1.0:
            return
        self.last = now
        share = f" ({100 * read / total:.0f}%)" if total else ""
        err_console.print(
            f"reading driftline.features and driftline.labels.valid: {read:,} / {total:,} "
            f"records{share}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@features_app.command("export")
def export(
    ctx: typer.Context,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="File to write: Parquet, or CSV if it ends in .csv."),
    ],
    featureset: Annotated[
        str | None,
        typer.Option(help="Feature set whose examples to export (default: the model's)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Only this model's features (a spec name in training.models_dir, or a spec's "
            "YAML path); its task decides the label check when the feature set declares none."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="First event time: ISO 8601 (UTC by default) or a duration ago (6h)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Event times before this (same forms as --since); default: no limit."),
    ] = None,
) -> None:
    """Export the logged feature vectors joined with their labels, as of event time.

    One row per labelled example, oldest first: event_id, entity_id, event_time,
    the features, label.  The same join and selection training uses for a
    retrain window, so a model fitted on the file sees what Driftline's own
    retraining sees.  Reads the logs up to their current end; progress goes to
    stderr.  Exits 2 for a bad option or spec, 1 when the logs cannot be read.
    """
    from aiokafka.errors import KafkaError

    from driftline.offline import ExportError, load_training_set, write_table
    from driftline.specs import SpecError

    settings = state(ctx).settings()
    start, end = parse_when(since, "--since"), parse_when(until, "--until")
    if featureset is None and model is None:
        raise typer.BadParameter("give --featureset, --model or both", param_hint="--featureset")
    try:
        result = load_training_set(
            settings, featureset, since=start, until=end, model=model, progress=_Progress()
        )
    except (ExportError, SpecError) as exc:
        err_console.print(
            f"driftline features export: {exc}", style="red", markup=False, soft_wrap=True
        )
        raise typer.Exit(2) from None
    except (DriftlineError, KafkaError, OSError) as exc:
        err_console.print(
            f"driftline features export: cannot read the logs at "
            f"{settings.kafka.bootstrap_servers}: {exc}",
            style="red",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    write_table(result.frame, output)
    of_model = f", model {result.model.name}" if result.model else ""
    left = f"; {result.left_out} left out (label not of the label type)" if result.left_out else ""
    console.print(
        f"wrote {len(result.frame):,} examples of {result.featureset} "
        f"({len(result.features)} features{of_model}{left}) "
        f"to {output}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
