"""What the ops stack saw, read back for people: alerts and traces.

- Alerts: Alertmanager's API lists the alerts active *now*; what fired and resolved
  earlier is in the notifications the local alert sink kept (one JSON line per
  webhook call, :mod:`driftline.devtools.alert_sink`).  :func:`alert_episodes` folds
  those notifications into one row per alert episode (fired at, resolved at).
- Traces: :class:`JaegerQuery` reads Jaeger's query API (``/api/services``,
  ``/api/traces``); :func:`find_traces` finds the trace of a trace id, a request id,
  a drift id or a retrain id (span attributes the services set), and
  :func:`gather_loop` follows the span links from one trace to the traces it
  links to (the loop's hops that start a trace of their own link to their cause).

Only the standard library talks HTTP here: the CLI makes a handful of calls, and
the endpoints are plain JSON.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ID_TAGS",
    "AlertEpisode",
    "JaegerQuery",
    "OpsUnreachable",
    "Trace",
    "TraceSpan",
    "active_alerts",
    "alert_episodes",
    "find_traces",
    "gather_loop",
    "trace_html",
]

ID_TAGS = (
    "driftline.retrain.id",
    "driftline.drift.id",
    "driftline.request.id",
    "driftline.event.id",
)
"""Span attributes an id given to ``driftline trace`` is looked up in, in this order."""

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class OpsUnreachable(RuntimeError):
    """Alertmanager or Jaeger did not answer (the message names the URL and what to do)."""


def _get_json(url: str, timeout_s: float = 10.0, *, missing: Any = ...) -> Any:
    """The JSON at ``url``; ``missing`` (when given) for a 404, else OpsUnreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and missing is not ...:
            return missing
        raise OpsUnreachable(f"{url}: {exc}") from None
    except OSError as exc:
        raise OpsUnreachable(
            f"{url} did not answer ({exc}); is the ops stack running? "
            "`driftline status` shows it, `driftline infra up` starts it"
        ) from None


def _time(text: str | None) -> datetime | None:
    """An RFC 3339 time of Alertmanager's; None for its zero time (not resolved)."""
    if not text or text.startswith("0001-"):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- alerts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertEpisode:
    """One alert from its first firing notification to its resolution (if seen)."""

    name: str
    severity: str
    labels: Mapping[str, str]
    summary: str
    started: datetime
    """When the alert started firing (Prometheus' ``startsAt``)."""
    notified: datetime
    """When the first firing notification reached the sink."""
    resolved: datetime | None
    """When it resolved (``endsAt`` of the resolved notification); None while firing."""

    @property
    def identity(self) -> str:
        """``AlertName{label="value", …}`` without ``alertname``."""
        rest = ", ".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{rest}}}" if rest else self.name


def alert_episodes(
    notifications: Iterable[Mapping[str, Any]], since: datetime | None = None
) -> list[AlertEpisode]:
    """Alertmanager webhook notifications folded into episodes, oldest first.

    Alerts are told apart by their labels (Alertmanager's fingerprint); a firing
    notification after a resolution opens a new episode.  ``since`` keeps the
    episodes still firing at, or started after, that time.
    """
    open_: dict[str, dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    for note in notifications:
        received = _time(str(note.get("receivedAt") or "")) or datetime.now(UTC)
        for alert in note.get("alerts") or []:
            labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
            key = json.dumps(labels, sort_keys=True)
            if alert.get("status") == "firing":
                if key not in open_:
                    open_[key] = {
                        "labels": labels,
                        "summary": str((alert.get("annotations") or {}).get("summary", "")),
                        "started": _time(alert.get("startsAt")) or received,
                        "notified": received,
                        "resolved": None,
                    }
            elif alert.get("status") == "resolved":
                episode = open_.pop(key, None)
                if episode is None:  # fired before the sink started keeping notes
                    episode = {
                        "labels": labels,
                        "summary": str((alert.get("annotations") or {}).get("summary", "")),
                        "started": _time(alert.get("startsAt")) or received,
                        "notified": received,
                    }
                episode["resolved"] = _time(alert.get("endsAt")) or received
                done.append(episode)
    rows = sorted([*done, *open_.values()], key=lambda e: (e["started"], e["notified"]))
    out = []
    for e in rows:
        if since is not None and e["resolved"] is not None and e["resolved"] < since:
            continue
        labels = dict(e["labels"])
        name = labels.pop("alertname", "?")
        severity = labels.pop("severity", "")
        out.append(
            AlertEpisode(
                name, severity, labels, e["summary"], e["started"], e["notified"], e["resolved"]
            )
        )
    return out


def active_alerts(alertmanager_url: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds now (``GET /api/v2/alerts``), active and silenced."""
    data = _get_json(f"{alertmanager_url.rstrip('/')}/api/v2/alerts")
    return list(data) if isinstance(data, list) else []


# -- traces -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceSpan:
    """One span as Jaeger returns it."""

    trace_id: str
    span_id: str
    service: str
    operation: str
    start_us: int
    duration_us: int
    parent: str | None
    """The span id of the CHILD_OF reference in the same trace."""
    links: tuple[tuple[str, str], ...]
    """(trace id, span id) of every other reference: links, parents in other traces."""
    tags: Mapping[str, Any]


@dataclass
class Trace:
    """The spans of one or more traces (the loop may span several, joined by links)."""

    trace_ids: list[str]
    spans: list[TraceSpan] = field(default_factory=list)

    @property
    def services(self) -> list[str]:
        """Every service with a span here, in order of its first span."""
        seen: dict[str, None] = {}
        for s in sorted(self.spans, key=lambda s: s.start_us):
            seen.setdefault(s.service, None)
        return list(seen)

    def tree_lines(self) -> list[str]:
        """One line per span, children indented under their parent, time from the start.

        A span whose parent is not here (it starts a trace, or its parent is in a trace
        not gathered) is a root; a link to another span is shown as ``↪ linked to``.
        """
        if not self.spans:
            return []
        t0 = min(s.start_us for s in self.spans)
        by_id = {s.span_id: s for s in self.spans}
        children: dict[str | None, list[TraceSpan]] = {}
        for s in self.spans:
            parent = s.parent if s.parent in by_id else None
            children.setdefault(parent, []).append(s)
        lines: list[str] = []

        def walk(span: TraceSpan, depth: int) -> None:
            at = (span.start_us - t0) / 1e6
            took = span.duration_us / 1e3
            line = f"{'  ' * depth}{at:9.3f}s  {span.service}: {span.operation} ({took:.1f} ms)"
            for trace_id, span_id in span.links:
                target = by_id.get(span_id)
                what = f"{target.service}: {target.operation}" if target else trace_id
                line += f"  ↪ linked to {what}"
            lines.append(line)
            for child in sorted(children.get(span.span_id, []), key=lambda c: c.start_us):
                walk(child, depth + 1)

        for root in sorted(children.get(None, []), key=lambda c: c.start_us):
            walk(root, 0)
        return lines


def _spans_of(data: Mapping[str, Any]) -> list[TraceSpan]:
    processes = data.get("processes") or {}
    out = []
    for raw in data.get("spans") or []:
        parent = None
        links = []
        for ref in raw.get("references") or []:
            if ref.get("refType") == "CHILD_OF" and ref.get("traceID") == raw["traceID"]:
                parent = ref.get("spanID")
            else:
                links.append((str(ref.get("traceID")), str(ref.get("spanID"))))
        service = (processes.get(raw.get("processID")) or {}).get("serviceName", "?")
        out.append(
            TraceSpan(
                trace_id=raw["traceID"],
                span_id=raw["spanID"],
                service=service,
                operation=raw.get("operationName", ""),
                start_us=int(raw.get("startTime", 0)),
                duration_us=int(raw.get("duration", 0)),
                parent=parent,
                links=tuple(links),
                tags={t["key"]: t.get("value") for t in raw.get("tags") or []},
            )
        )
    return out


class JaegerQuery:
    """Jaeger's HTTP query API at ``base_url`` (``http://127.0.0.1:16686``)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def services(self) -> list[str]:
        """Services that have sent spans."""
        return list(_get_json(f"{self.base_url}/api/services").get("data") or [])

    def trace(self, trace_id: str) -> list[TraceSpan]:
        """The spans of one trace (none when Jaeger does not hold it)."""
        found = _get_json(f"{self.base_url}/api/traces/{trace_id}", missing={})
        data = found.get("data") or []
        return [s for d in data for s in _spans_of(d)]

    def search(
        self, service: str, tags: Mapping[str, str], *, lookback: str = "24h", limit: int = 20
    ) -> list[str]:
        """Trace ids of ``service``'s traces with spans carrying every one of ``tags``."""
        query = urllib.parse.urlencode(
            {
                "service": service,
                "tags": json.dumps(dict(tags)),
                "lookback": lookback,
                "limit": str(limit),
            }
        )
        data = _get_json(f"{self.base_url}/api/traces?{query}").get("data") or []
        return [str(d["traceID"]) for d in data if d.get("traceID")]


def find_traces(jaeger: JaegerQuery, ident: str, *, lookback: str = "24h") -> list[str]:
    """Trace ids for ``ident``: itself when it is a trace id Jaeger holds, else the
    traces with a span whose :data:`ID_TAGS` attribute equals it, oldest first."""
    ident = ident.strip()
    if _TRACE_ID.match(ident.lower()) and jaeger.trace(ident.lower()):
        return [ident.lower()]
    found: dict[str, None] = {}
    services = jaeger.services()
    for tag in ID_TAGS:
        for service in services:
            for trace_id in jaeger.search(service, {tag: ident}, lookback=lookback):
                found.setdefault(trace_id, None)
        if found:
            break
    return list(found)


def gather_loop(jaeger: JaegerQuery, trace_ids: Iterable[str], *, max_traces: int = 20) -> Trace:
    """The spans of ``trace_ids`` and of every trace their spans link to (transitively,
    up to ``max_traces`` traces), so a loop whose hops start traces of their own and
    link to their cause reads as one."""
    todo = list(dict.fromkeys(trace_ids))
    done: list[str] = []
    spans: list[TraceSpan] = []
    while todo and len(done) < max_traces:
        trace_id = todo.pop(0)
        if trace_id in done:
            continue
        done.append(trace_id)
        got = jaeger.trace(trace_id)
        spans.extend(got)
        for s in got:
            for linked, _ in s.links:
                if linked not in done and linked not in todo:
                    todo.append(linked)
    return Trace(done, spans)


def trace_html(trace: Trace, title: str, jaeger_url: str | None = None) -> str:
    """A self-contained HTML page of ``trace``: one row per span, indented under its
    parent, with a bar on a shared time axis (a local stand-in for Jaeger's trace view:
    Jaeger built from its Go module has no UI assets, only its API)."""
    from html import escape

    rows: list[str] = []
    if trace.spans:
        t0 = min(s.start_us for s in trace.spans)
        total = max(max(s.start_us + s.duration_us for s in trace.spans) - t0, 1)
        ordered = sorted(trace.spans, key=lambda s: s.start_us)
        depth = {s.span_id: 0 for s in ordered}
        for s in ordered:
            if s.parent in depth:
                depth[s.span_id] = depth[s.parent] + 1
        for s in ordered:
            left = 100 * (s.start_us - t0) / total
            width = max(100 * s.duration_us / total, 0.3)
            linked = "".join(
                f' <span class="link">↪ {escape(t[:8])}…{escape(sp)}</span>' for t, sp in s.links
            )
            rows.append(
                f'<tr data-service="{escape(s.service)}">'
                f'<td style="padding-left:{8 + 16 * depth[s.span_id]}px">'
                f"<b>{escape(s.service)}</b> {escape(s.operation)}{linked}</td>"
                f"<td>{(s.start_us - t0) / 1e6:.3f} s</td><td>{s.duration_us / 1e3:.1f} ms</td>"
                f'<td class="axis"><div class="bar" style="left:{left:.2f}%;'
                f'width:{width:.2f}%"></div></td></tr>'
            )
    services = ", ".join(escape(s) for s in trace.services)
    source = (
        f'<p>From Jaeger\'s API at <a href="{escape(jaeger_url)}">{escape(jaeger_url)}</a>.</p>'
        if jaeger_url
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #1a202c; }}
table {{ border-collapse: collapse; width: 100%; }}
td {{ border-bottom: 1px solid #e2e8f0; padding: 4px 8px; white-space: nowrap; }}
td.axis {{ position: relative; width: 40%; }}
.bar {{ position: absolute; top: 6px; height: 12px; background: #3182ce; border-radius: 2px; }}
.link {{ color: #805ad5; font-size: 12px; }}
</style></head><body>
<h1>{escape(title)}</h1>
<p id="summary">{len(trace.spans)} spans from {len(trace.services)} services: {services}</p>
<p>Trace ids: {", ".join(escape(t) for t in trace.trace_ids)}</p>
{source}
<table><tr><th>span</th><th>start</th><th>duration</th><th>timeline</th></tr>
{"".join(rows)}
</table></body></html>
"""
