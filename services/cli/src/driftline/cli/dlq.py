"""``driftline dlq show | original | replay``: inspect dead letters, re-submit them after a fix."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from driftline.cli.context import console, err_console, state
from driftline.contracts.messages import DlqReason
from driftline.kafkaio.dlq import (
    Original,
    StoredLetter,
    fetch_original,
    read_dead_letter,
    read_dead_letters,
    replay_dead_letters,
)
from driftline.security.kafka_auth import KafkaAuth, kafka_auth
from driftline.settings import KafkaSettings

CLI_IDENTITY = "admin"
"""Whose Kafka credentials the ``dlq`` commands use in secure mode (unless
``security.identity`` names another)."""

dlq_app = typer.Typer(
    help="Dead letters: what ingestion refused, why, and replaying them once fixed.",
    no_args_is_help=True,
)

ReasonOpt = Annotated[
    list[DlqReason] | None,
    typer.Option("--reason", "-r", help="Only this reason (repeat for several)."),
]
KindOpt = Annotated[str | None, typer.Option("--kind", help="Only 'event' or 'label' records.")]


def _kafka(ctx: typer.Context) -> tuple[KafkaSettings, KafkaAuth | None]:
    """The broker's settings and, in secure mode, the CLI's Kafka identity."""
    settings = state(ctx).settings()
    return settings.kafka, kafka_auth(settings.security, CLI_IDENTITY)


def _read(
    ctx: typer.Context, reasons: list[DlqReason] | None, kind: str | None, limit: int | None
) -> list[StoredLetter]:
    settings, security = _kafka(ctx)
    if kind not in (None, "event", "label"):
        err_console.print("driftline: --kind is 'event' or 'label'", style="red")
        raise typer.Exit(2)
    return asyncio.run(
        read_dead_letters(
            settings, reasons=reasons or (), kind=kind, limit=limit, security=security
        )
    )


def _preview(raw: bytes, width: int = 60) -> str:
    text = raw.decode("utf-8", "backslashreplace")
    return text if len(text) <= width else text[: width - 1] + "…"


def _original_cell(s: StoredLetter) -> str:
    d = s.letter
    preview = _preview(d.original())
    if not d.truncated:
        return preview
    # The letter kept only the record's first bytes; `dlq original` reads the rest back.
    return f"{preview} (first {len(d.original()):,} of {d.original_size or 0:,} bytes)"


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
    table = Table("received", "at", "reason", "kind", "from", "key", "detail", "original")
    for s in letters:
        d = s.letter
        origin = (
            f"{d.source_topic}:{d.source_partition}:{d.source_offset}"
            if d.source == "kafka"
            else "http"
        )
        # Record contents are shown as text: a "[" in them is not Rich markup.
        table.add_row(
            d.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{s.partition}:{s.offset}",
            d.reason.value,
            d.kind,
            origin,
            Text(_preview((d.original_key or "").encode(), 24)),
            Text(d.detail),
            Text(_original_cell(s)),
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")
    if any(s.letter.truncated for s in letters):
        console.print(
            "a truncated letter keeps the record's first bytes; `driftline dlq original "
            "PARTITION:OFFSET` (the 'at' column) writes the whole record, read back from its "
            "source topic"
        )


@dlq_app.command("original")
def original(
    ctx: typer.Context,
    at: Annotated[
        str, typer.Argument(help="The letter's place on driftline.dlq, PARTITION:OFFSET.")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the bytes to this file instead of stdout."),
    ] = None,
) -> None:
    """Write a dead letter's whole original record, byte for byte.

    A letter of an oversized record keeps only its first bytes; the whole record is
    read back from its source topic, partition and offset (while the topic retains
    it) and checked against the sha256 the letter recorded.
    """
    try:
        partition, offset = (int(part) for part in at.split(":"))
    except ValueError:
        err_console.print(
            f"driftline: {at!r} is not PARTITION:OFFSET (the 'at' column of `driftline dlq show`)",
            style="red",
        )
        raise typer.Exit(2) from None
    settings, security = _kafka(ctx)

    async def read() -> Original:
        stored = await read_dead_letter(settings, partition, offset, security=security)
        return await fetch_original(settings, stored.letter, security=security)

    try:
        found = asyncio.run(read())
    except LookupError as exc:
        err_console.print(f"driftline: {exc}", style="red")
        raise typer.Exit(1) from None
    value = found.value
    if value is None:
        err_console.print(
            f"driftline: the whole original is not available: {found.problem}", style="red"
        )
        raise typer.Exit(1)
    if output is not None:
        output.write_bytes(value)
        where = "read back from its source" if found.from_source else "kept in the letter"
        err_console.print(f"wrote {len(value):,} bytes ({where}) to {output}")
    else:
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()


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
    settings, security = _kafka(ctx)
    result = asyncio.run(replay_dead_letters(settings, letters, security=security))
    console.print(f"replayed {result.sent} record(s); watch them with `driftline dlq show`")
    for stored, problem in result.unavailable:
        err_console.print(
            f"not replayed: the letter at {stored.partition}:{stored.offset} kept only the "
            f"record's first bytes, and {problem}",
            style="yellow",
        )
    if result.unavailable:
        raise typer.Exit(1)
