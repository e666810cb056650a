"""``driftline alerts`` and ``driftline trace``: what an operator would click through.

Both read the local platform's ops stack by default (the ports under
``infra.ops``); ``--alertmanager`` / ``--jaeger`` point them at another one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from driftline.cli.context import console, err_console, state
from driftline.cli.ops_views import (
    ID_TAGS,
    JaegerQuery,
    OpsUnreachable,
    active_alerts,
    alert_episodes,
    find_traces,
    gather_loop,
)
from driftline.devtools.alert_sink import read_notifications
from driftline.settings import PlatformSettings

__all__ = ["alertmanager_url", "jaeger_url", "notifications_file", "register_ops_commands"]


def alertmanager_url(settings: PlatformSettings) -> str:
    """The local platform's Alertmanager."""
    return f"http://127.0.0.1:{settings.infra.ops.alertmanager_port}"


def jaeger_url(settings: PlatformSettings) -> str:
    """The local platform's Jaeger query API and UI."""
    return f"http://127.0.0.1:{settings.infra.ops.jaeger_ui_port}"


def notifications_file(settings: PlatformSettings) -> Path:
    """Where the local alert sink keeps every notification (see ``AlertSinkNode``)."""
    from driftline.devtools.infra import AlertSinkNode

    return AlertSinkNode(settings.infra.state_dir).notifications_file


def _fail(message: str) -> typer.Exit:
    err_console.print(f"driftline: {message}", style="red", highlight=False, markup=False)
    return typer.Exit(1)


def _clock(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def alerts(
    ctx: typer.Context,
    since: Annotated[
        float, typer.Option(help="Episodes of the last N hours (0: every one kept).")
    ] = 24.0,
    alertmanager: Annotated[
        str | None, typer.Option(help="Alertmanager URL (default: the local platform's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per episode.")] = False,
) -> None:
    """Alerts that fired (and resolved) and the ones active now.

    History comes from the notifications Alertmanager sent to the local alert sink
    (fired at, resolved at); the active list from Alertmanager's API.  Exits 1
    when Alertmanager does not answer.
    """
    settings = state(ctx).settings()
    url = alertmanager or alertmanager_url(settings)
    cutoff = datetime.now(UTC) - timedelta(hours=since) if since > 0 else None
    episodes = alert_episodes(read_notifications(notifications_file(settings)), since=cutoff)
    try:
        active = active_alerts(url)
    except OpsUnreachable as exc:
        raise _fail(str(exc)) from None
    if as_json:
        for e in episodes:
            row = {
                "alert": e.name,
                "severity": e.severity,
                "labels": dict(e.labels),
                "started": e.started.isoformat(),
                "notified": e.notified.isoformat(),
                "resolved": e.resolved.isoformat() if e.resolved else None,
                "summary": e.summary,
            }
            console.print_json(json.dumps(row))
        return
    table = Table("alert", "severity", "fired", "resolved", "summary", title="Alert history")
    for e in episodes:
        resolved = _clock(e.resolved) if e.resolved else "firing"
        table.add_row(e.identity, e.severity, _clock(e.started), resolved, e.summary)
    if episodes:
        console.print(table)
    else:
        console.print("no alert has fired" + (f" in the last {since:g} h" if cutoff else ""))
    firing = [a for a in active if (a.get("status") or {}).get("state") == "active"]
    if firing:
        now = Table("alert", "severity", "since", "summary", title=f"Active now at {url}")
        for a in firing:
            labels = a.get("labels") or {}
            now.add_row(
                str(labels.get("alertname", "?")),
                str(labels.get("severity", "")),
                str(a.get("startsAt", ""))[:19].replace("T", " "),
                str((a.get("annotations") or {}).get("summary", "")),
            )
        console.print(now)
    else:
        console.print(f"no alert active now at {url}")


def trace(
    ctx: typer.Context,
    ident: Annotated[
        str,
        typer.Argument(
            help="A trace id, or a request, drift, retrain or event id (span attributes "
            + ", ".join(ID_TAGS)
            + ")."
        ),
    ],
    jaeger: Annotated[
        str | None, typer.Option(help="Jaeger query URL (default: the local platform's).")
    ] = None,
    lookback: Annotated[str, typer.Option(help="How far back to search (Jaeger: 1h, 2d).")] = "24h",
) -> None:
    """Print a trace as a tree: every hop's service, operation, start and duration.

    Traces the spans link to are gathered too, so a retrain id shows the loop from
    the drift to the new champion's first prediction.  Exits 1 when nothing is found.
    """
    settings = state(ctx).settings()
    query = JaegerQuery(jaeger or jaeger_url(settings))
    try:
        found = find_traces(query, ident, lookback=lookback)
        if not found:
            raise _fail(
                f"no trace for {ident!r} in Jaeger at {query.base_url} (last {lookback}); "
                "check the id, or that the services export traces "
                "(telemetry.otlp_endpoint)"
            )
        loop = gather_loop(query, found)
    except OpsUnreachable as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"trace {', '.join(loop.trace_ids)}: {len(loop.spans)} spans, "
        f"services {', '.join(loop.services)}",
        highlight=False,
        soft_wrap=True,
    )
    for line in loop.tree_lines():
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(f"{query.base_url}/trace/{loop.trace_ids[0]}", highlight=False)


def register_ops_commands(app: typer.Typer) -> None:
    """Add ``alerts`` and ``trace`` to the root command."""
    app.command("alerts")(alerts)
    app.command("trace")(trace)
