"""The local receiver of Alertmanager's notifications: one JSON line each, in a file.

Alertmanager can only *push* what it sent (its API lists the alerts active now,
not the ones that fired and resolved an hour ago); this webhook receiver keeps
that history for ``driftline alerts`` and the demo report. Every ``POST`` body
(Alertmanager's webhook payload: ``status``, ``alerts`` with ``labels``,
``startsAt``, ``endsAt`` …) is appended as one line to the notifications file,
with ``receivedAt`` (UTC, ISO 8601) added. ``GET /healthz`` answers ``ok``.

Run: ``python -m driftline.devtools.alert_sink --port 9096 --file notes.jsonl``
(:class:`driftline.devtools.infra.AlertSinkNode` runs it in the local platform).
Standard library only, so that it starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["MODULE", "main", "make_server", "read_notifications"]

MODULE = "driftline.devtools.alert_sink"
"""What ``python -m`` runs."""

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest notification accepted (Alertmanager's payloads are a few KiB per alert)."""


def read_notifications(path: Path) -> list[dict[str, object]]:
    """Every notification in ``path``, oldest first (none when it does not exist yet)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


class _Handler(BaseHTTPRequestHandler):
    server: _SinkServer

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/healthz":
            self._reply(HTTPStatus.OK, "ok\n")
        else:
            self._reply(HTTPStatus.NOT_FOUND, "POST notifications to any path; GET /healthz\n")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too large\n")
            return
        try:
            payload = json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._reply(HTTPStatus.BAD_REQUEST, f"not JSON: {exc}\n")
            return
        if not isinstance(payload, dict):
            self._reply(HTTPStatus.BAD_REQUEST, "expected a JSON object\n")
            return
        payload["receivedAt"] = datetime.now(UTC).isoformat()
        self.server.append(json.dumps(payload, separators=(",", ":"), sort_keys=False))
        self._reply(HTTPStatus.OK, "stored\n")

    def _reply(self, status: HTTPStatus, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


class _SinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], file: Path) -> None:
        super().__init__(address, _Handler)
        self.file = file
        self._lock = threading.Lock()

    def append(self, line: str) -> None:
        with self._lock, self.file.open("a", encoding="utf-8") as out:
            out.write(line + "\n")


def make_server(host: str, port: int, file: Path) -> ThreadingHTTPServer:
    """The sink bound to ``host:port`` (not yet serving), appending to ``file``."""
    file.parent.mkdir(parents=True, exist_ok=True)
    return _SinkServer((host, port), file)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path, required=True, help="the JSON-lines file")
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, args.file)
    print(f"alert sink on http://{args.host}:{args.port}/ writing {args.file}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
