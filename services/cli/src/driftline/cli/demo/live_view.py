"""The terminal view while the demo runs: progress figures and the milestones so far."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table

from driftline.cli.demo.milestones import ROLLING, DemoObserver, version_text

__all__ = ["live_view"]


def live_view(obs: DemoObserver, total_events: int) -> RenderableType:
    """The progress table and the milestones so far."""
    progress_table = Table.grid(padding=(0, 2))
    progress_table.add_column(style="bold")
    progress_table.add_column()
    acc = obs.rolling_accuracy
    progress_table.add_row(
        "events", f"{obs.events_sent:,} / {total_events:,}  (drift at {obs.scenario.drift_at:,})"
    )
    progress_table.add_row("labels", f"{obs.labels_sent:,}")
    progress_table.add_row(
        "predictions", f"{len(obs.answers):,} answered, {len(obs.failures)} failed"
    )
    progress_table.add_row(f"accuracy (last {ROLLING})", f"{acc:.3f}" if acc is not None else "-")
    progress_table.add_row("champion", version_text(obs.current_champion))
    progress_table.add_row("elapsed", f"{obs.now():.0f}s")
    milestones = Table(title="milestones", show_edge=False, expand=False)
    milestones.add_column("t (s)", justify="right")
    milestones.add_column("event", justify="right")
    milestones.add_column("what")
    milestones.add_column("detail", overflow="fold")
    for m in obs.milestones[-12:]:
        milestones.add_row(f"{m.wall_s:.1f}", f"{m.at_event:,}", m.name, m.detail)
    return Group(progress_table, milestones)
