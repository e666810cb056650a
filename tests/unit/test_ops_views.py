"""Reading back what the ops stack saw: alert episodes from Alertmanager's webhook
notifications, and span trees from Jaeger's query API JSON (shapes as those servers
send them; the servers themselves are exercised in tests/integration/test_ops_*)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from driftline.cli.ops_views import Trace, _spans_of, alert_episodes

pytestmark = pytest.mark.unit

ZERO = "0001-01-01T00:00:00Z"


def _note(status: str, received: str, *alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "status": status,
        "receiver": "driftline-local",
        "alerts": list(alerts),
        "receivedAt": received,
    }


def _alert(status: str, name: str, starts: str, ends: str = ZERO, **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "info", **labels},
        "annotations": {"summary": f"{name} summary"},
        "startsAt": starts,
        "endsAt": ends,
        "fingerprint": "f",
    }


def test_a_fired_then_resolved_alert_is_one_episode_with_both_times() -> None:
    notes = [
        _note(
            "firing",
            "2026-12-06T10:00:03+00:00",
            _alert("firing", "DriftDetected", "2026-12-06T10:00:00Z", model="loans"),
        ),
        _note(  # Alertmanager repeats a firing alert: no second episode
            "firing",
            "2026-12-06T10:00:08+00:00",
            _alert("firing", "DriftDetected", "2026-12-06T10:00:00Z", model="loans"),
        ),
        _note(
            "resolved",
            "2026-12-06T10:05:01+00:00",
            _alert(
                "resolved",
                "DriftDetected",
                "2026-12-06T10:00:00Z",
                "2026-12-06T10:05:00Z",
                model="loans",
            ),
        ),
    ]
    [episode] = alert_episodes(notes)
    assert episode.name == "DriftDetected"
    assert episode.severity == "info"
    assert episode.identity == 'DriftDetected{model="loans"}'
    assert episode.started == datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC)
    assert episode.notified == datetime(2026, 12, 6, 10, 0, 3, tzinfo=UTC)
    assert episode.resolved == datetime(2026, 12, 6, 10, 5, 0, tzinfo=UTC)
    assert episode.summary == "DriftDetected summary"


def test_alerts_with_other_labels_are_apart_and_a_refire_opens_a_new_episode() -> None:
    a = _alert("firing", "ConsumerLagHigh", "2026-12-06T10:00:00Z", topic="x")
    b = _alert("firing", "ConsumerLagHigh", "2026-12-06T10:00:01Z", topic="y")
    a_done = _alert(
        "resolved", "ConsumerLagHigh", "2026-12-06T10:00:00Z", "2026-12-06T10:01:00Z", topic="x"
    )
    a_again = _alert("firing", "ConsumerLagHigh", "2026-12-06T10:02:00Z", topic="x")
    notes = [
        _note("firing", "2026-12-06T10:00:02+00:00", a, b),
        _note("resolved", "2026-12-06T10:01:01+00:00", a_done),
        _note("firing", "2026-12-06T10:02:02+00:00", a_again),
    ]
    episodes = alert_episodes(notes)
    assert [(e.labels["topic"], e.resolved is not None) for e in episodes] == [
        ("x", True),
        ("y", False),
        ("x", False),
    ]
    # `since` drops what resolved before it, keeps what still fires
    later = alert_episodes(notes, since=datetime(2026, 12, 6, 10, 1, 30, tzinfo=UTC))
    assert [(e.labels["topic"], e.resolved) for e in later] == [("y", None), ("x", None)]


def _span(
    trace: str, span: str, op: str, proc: str, start: int, refs: list[tuple[str, str, str]]
) -> dict[str, Any]:
    return {
        "traceID": trace,
        "spanID": span,
        "operationName": op,
        "references": [{"refType": r, "traceID": t, "spanID": s} for r, t, s in refs],
        "startTime": start,
        "duration": 1500,
        "tags": [{"key": "driftline.retrain.id", "type": "string", "value": "r-1"}],
        "processID": proc,
    }


def test_jaeger_spans_become_a_tree_with_parents_and_links() -> None:
    t1, t2 = "a" * 32, "b" * 32
    data = {
        "traceID": t1,
        "spans": [
            _span(t1, "01", "drift detected", "p1", 1_000_000, []),
            _span(t1, "02", "retrain requested", "p1", 1_100_000, [("CHILD_OF", t1, "01")]),
            _span(t1, "03", "train candidate", "p2", 2_000_000, [("CHILD_OF", t1, "02")]),
            _span(t1, "04", "swap", "p3", 3_000_000, [("FOLLOWS_FROM", t2, "09")]),
        ],
        "processes": {
            "p1": {"serviceName": "driftline-monitoring"},
            "p2": {"serviceName": "driftline-training"},
            "p3": {"serviceName": "driftline-serving"},
        },
    }
    spans = _spans_of(data)
    assert [s.service for s in spans][:3] == [
        "driftline-monitoring",
        "driftline-monitoring",
        "driftline-training",
    ]
    assert spans[2].parent == "02"
    assert spans[3].parent is None and spans[3].links == ((t2, "09"),)
    assert spans[0].tags["driftline.retrain.id"] == "r-1"
    trace = Trace([t1], spans)
    assert trace.services == ["driftline-monitoring", "driftline-training", "driftline-serving"]
    lines = trace.tree_lines()
    assert lines[0].lstrip().startswith("0.000s  driftline-monitoring: drift detected")
    assert lines[1].startswith("  ") and "retrain requested" in lines[1]
    assert lines[2].startswith("    ") and "driftline-training: train candidate" in lines[2]
    assert "swap" in lines[3] and f"linked to {t2}" in lines[3]
