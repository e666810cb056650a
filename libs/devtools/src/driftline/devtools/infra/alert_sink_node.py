"""The alert sink (:mod:`driftline.devtools.alert_sink`) as a process of the local platform."""

from __future__ import annotations

import sys
from pathlib import Path

from driftline.devtools.alert_sink import MODULE
from driftline.devtools.infra.http_component import HttpComponent

__all__ = ["AlertSinkNode"]


class AlertSinkNode(HttpComponent):
    """``python -m driftline.devtools.alert_sink``, appending to ``notifications_file``.

    The file is ``<state_dir>/alertmanager/notifications.jsonl``: next to the
    Alertmanager whose notifications it holds.
    """

    name = "alert-sink"
    what = "the local alert sink"
    port_setting = "DRIFTLINE_INFRA__OPS__ALERT_SINK_PORT"
    ready_path = "/healthz"

    def __init__(self, state_dir: Path, *, host: str = "127.0.0.1", port: int = 9096) -> None:
        super().__init__(state_dir, host=host, port=port)
        self.notifications_file = self.state_dir / "alertmanager" / "notifications.jsonl"

    @property
    def webhook_url(self) -> str:
        """Where Alertmanager posts."""
        return f"{self.url}/alerts"

    def prepare(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            MODULE,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--file",
            str(self.notifications_file),
        ]
