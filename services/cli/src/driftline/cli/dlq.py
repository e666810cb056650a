"""``driftline dlq show | replay``: inspect dead letters, and re-submit them after a fix."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from driftline.cli.context import console, err_console, state
from driftline.contracts.messages import DlqReason
from driftline.kafkaio.dlq import StoredLetter, read_dead_letters, replay_dead_letters

dlq_app = typer.Typer(
    help="Dead letters: what ingestion refused, why, and replaying them once fixed.",
    no_args_is_help=True,
)

ReasonOpt = Annotated[
    list[DlqReason] | None,
    typer.Option("--reason", "-r", help="Only this reason (repeat for several)."),
]
KindOpt = Annotated[str | None, typer.Option("--kind", help="Only 'event' or 'label' records.")]


def _read(
    ctx: typer.Context, reasons: list[DlqReason] | None, kind: str | None, limit: int | None
) -> list[StoredLetter]:
    settings = state(ctx).settings().kafka
    if kind not in (None, "event", "label"):
        err_console.print("driftline: --kind is 'event' or 'label'", style="red")
        raise typer.Exit(2)
    return asyncio.run(read_dead_letters(settings, reasons=reasons or (), kind=kind, limit=limit))


def _preview(raw: bytes, width: int = 60) -> str:
    text = raw.decode("utf-8", "backslashreplace")
    return text if len(text) <= width else text[: width - 1] + "…"


@dlq_app.command("show")
def show(
    ctx: typer.Context,
    reason: ReasonOpt = None,
    kind: KindOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Newest N letters.")] = 50,
) -> None:
    """List dead letters (newest last) with reason, detail, origin and the original bytes."""
    letters = _read(ctx, reason, kind, limit)
    if not letters:
        console.print("no dead letters match")
        return
    table = Table("received", "reason", "kind", "from", "key", "detail", "original")
    for s in letters:
        d = s.letter
        origin = (
            f"{d.source_topic}:{d.source_partition}:{d.source_offset}"
            if d.source == "kafka"
            else "http"
        )
        table.add_row(
            d.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            d.reason.value,
            d.kind,
            origin,
            d.original_key or "",
            d.detail,
            _preview(d.original()),
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@dlq_app.command("replay")
def replay(
    ctx: typer.Context,
    reason: ReasonOpt = None,
    kind: KindOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be replayed; send nothing.")
    ] = False,
) -> None:
    """Re-submit dead letters' original bytes to driftline.events / driftline.labels.

    Fix the cause first (register the feature set, relax the constraint); the
    records then pass ingestion again.  Event-id dedup keeps a record that was
    already accepted from being counted twice.
    """
    if not reason:
        err_console.print(
            "driftline: name the reason(s) to replay with --reason (e.g. --reason "
            "unknown_featureset); replaying everything would resend true garbage too",
            style="red",
        )
        raise typer.Exit(2)
    letters = _read(ctx, reason, kind, None)
    if dry_run or not letters:
        console.print(f"{len(letters)} dead letter(s) would be replayed")
        return
    sent = asyncio.run(replay_dead_letters(state(ctx).settings().kafka, letters))
    console.print(f"replayed {sent} record(s); watch them with `driftline dlq show`")
