"""Garbage for Driftline's internal topics, written with kcat (a client outside Driftline).

Internal topics (``driftline.models``, ``.features``, ``.predictions``,
``.labels.valid``) are written by Driftline itself, but nothing stops another
client: every consumer must skip what it cannot read and go on.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import httpx

from driftline.contracts.topics import Topic

GARBAGE: dict[str, bytes | None] = {
    "not JSON": b"this is not JSON at all",
    "invalid UTF-8": b'{"event_id": "\xff\xfe\xfd"}',
    "a tombstone": None,
    "the wrong schema": b'{"event_id": "x", "unexpected": [1, 2, 3]}',
}
"""One unreadable record of each kind, by what it is."""


def kcat_produce(bootstrap: str, topic: Topic, values: list[bytes | None], *, key: str) -> None:
    """Produce ``values`` (``None``: a null value, a tombstone) to ``topic`` with kcat, in order.

    Each value is sent from a file of its own, so values may hold any bytes (newlines
    included); a tombstone is a ``key<TAB>`` line read with ``-Z`` (kcat sends no empty
    file, nor an empty line without a key delimiter).
    """
    base = ["kcat", "-P", "-b", bootstrap, "-t", topic.name, "-p", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        for i, value in enumerate(values):
            if value is None:
                command, stdin = [*base, "-Z", "-K", "\t"], key.encode() + b"\t\n"
            else:
                path = Path(tmp) / f"{i:05d}"
                path.write_bytes(value)
                command, stdin = [*base, "-k", key, str(path)], b""
            # One call per value, each waiting for its delivery: the order is kept.
            subprocess.run(command, input=stdin, check=True, timeout=60, capture_output=True)


def skipped_counts(metrics_text: str) -> dict[tuple[str, str], float]:
    """``(topic, reason) -> count`` of ``driftline_records_skipped_total`` in a /metrics text."""
    out: dict[tuple[str, str], float] = {}
    prefix = "driftline_records_skipped_total{"
    for line in metrics_text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, value = line[len(prefix) :].rsplit("} ", 1)
        parts = dict(item.split("=", 1) for item in labels.split(","))
        out[(parts["topic"].strip('"'), parts["reason"].strip('"'))] = float(value)
    return out


async def scrape_skipped(admin_url: str) -> dict[tuple[str, str], float]:
    """The skipped-record counters a service's admin endpoint shows now."""
    async with httpx.AsyncClient(timeout=5) as client:
        return skipped_counts((await client.get(f"{admin_url}/metrics")).text)


def delta(
    after: dict[tuple[str, str], float], before: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """The counters that moved between two scrapes, by how much."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
