"""The demo's Markdown report with its accuracy plot, and reading its Summary back."""

from __future__ import annotations

import re
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from driftline.cli.demo.milestones import DemoObserver
from driftline.cli.demo.options import DemoOptions

__all__ = ["PLOT_WINDOW", "report_summary", "write_report"]

PLOT_WINDOW = 200
"""Events per point of the report's rolling-accuracy curve."""


def write_report(obs: DemoObserver, path: Path, options: DemoOptions) -> tuple[Path, Path]:
    """Write the Markdown report and its PNG plot next to it; return both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_suffix(".png")
    answers = sorted(obs.answers, key=lambda a: a.index)
    xs: list[int] = []
    ys: list[float] = []
    window: deque[bool] = deque(maxlen=PLOT_WINDOW)
    for a in answers:
        window.append(a.correct)
        if len(window) == PLOT_WINDOW or a is answers[-1]:
            xs.append(a.index)
            ys.append(sum(window) / len(window))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(xs, ys, color="tab:blue", linewidth=1.2, label=f"accuracy (last {PLOT_WINDOW})")
    ax.axvline(obs.scenario.drift_at, color="tab:red", linestyle="-", label="concept drift")
    det = obs.detection
    if det is not None:
        ax.axvline(det[1], color="tab:orange", linestyle="--", label="drift detected")
    if obs.new_version_first_index is not None:
        ax.axvline(
            obs.new_version_first_index,
            color="tab:green",
            linestyle="--",
            label=f"new champion serving (v{obs.new_champion[0] if obs.new_champion else '?'})",
        )
    if obs.scenario.return_at is not None:
        ax.axvline(obs.scenario.return_at, color="tab:purple", linestyle="-",
                   label="old concept returns")  # fmt: skip
        restored = obs.restored
        if restored is not None:
            ax.axvline(restored[3], color="tab:olive", linestyle="--",
                       label=f"old champion restored (v{restored[0]})")  # fmt: skip
    ax.set_xlabel("event index")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(0, max(obs.scenario.events, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(f"driftline demo: {obs.scenario.events:,} events, seed {obs.scenario.seed}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)

    problems = obs.problems()
    lines = [
        "# Driftline demo report",
        "",
        f"Run at {datetime.now(UTC).isoformat(timespec='seconds')}: {options.events:,} events at "
        f"{options.rate:g}/s, concept drift at event {options.drift_at:,} "
        f"(Agrawal function {obs.scenario.function_before} → {obs.scenario.function_after}), "
        f"labels {options.label_delay} events late, seed {options.seed}, model `{obs.model}`"
        + (
            f"; the old rule returns at event {options.return_at:,}."
            if options.return_at is not None
            else "."
        ),
        "",
        "**Loop closed.**" if not problems else "**Loop did not close:** " + "; ".join(problems),
        "",
        f"![rolling accuracy]({png.name})",
        "",
        "## Summary",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in obs.summary().items()),
        "",
        "Accuracy compares each `Predict` response with the label the demo sent for that event.",
        '"During" runs from the drift point to the first event answered by the new champion.',
        "",
        "## Milestones",
        "",
        "| t (s) | events sent | milestone | detail |",
        "|---:|---:|---|---|",
        *(
            f"| {m.wall_s:.1f} | {m.at_event} | {m.name} | {m.detail.replace('|', '/')} |"
            for m in obs.milestones
        ),
        "",
        "## Champion changes during the run",
        "",
        "| version | t (s) | events sent | trigger |",
        "|---:|---:|---:|---|",
        *(f"| v{v} | {at:.1f} | {n} | {trig or '-'} |" for v, at, trig, n in obs.champions),
        "",
        "## Drift detections",
        "",
        "| t (s) | events sent | kind | detector | features | statistic | severity |",
        "|---:|---:|---|---|---|---:|---|",
        *(
            f"| {at:.1f} | {n} | {e.kind.value} | {e.detector} | {', '.join(e.features) or '-'} "
            f"| {e.statistic:.4g} > {e.threshold:.4g} | {e.severity} |"
            for e, n, at in obs.drift_events
        ),
        "",
    ]
    if obs.failures:
        lines += ["## Failed requests (first 20)", "", *(f"- {f}" for f in obs.failures[:20]), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, png


def report_summary(report: str) -> dict[str, str]:
    """The figure -> value rows of a demo report's Summary table."""
    section = report.split("## Summary", 1)[1].split("## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| (.+?) \|$", section, flags=re.MULTILINE)
    return {k: v for k, v in rows if k not in ("figure", "---")}
