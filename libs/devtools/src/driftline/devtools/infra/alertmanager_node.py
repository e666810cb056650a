"""Alertmanager routing every alert to the local sink, and to the user's webhook if set.

A local platform wants to hear of an alert at once, so groups wait 1 s and are
re-sent after 5 s when they change (a production Alertmanager waits tens of
seconds to batch); resolved alerts are sent too, since "it fired and resolved"
is what ``driftline alerts`` and the demo report show. No gossip cluster: one
Alertmanager, ``--cluster.listen-address=`` empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from driftline.devtools.infra.http_component import PrometheusProjectServer
from driftline.devtools.infra.templates import write_yaml
from driftline.settings import PlatformSettings

__all__ = ["LOCAL_RECEIVER", "USER_RECEIVER", "AlertmanagerNode", "alertmanager_config"]

LOCAL_RECEIVER = "driftline-local"
"""The receiver posting to the local alert sink."""
USER_RECEIVER = "driftline-webhook"
"""The receiver posting to ``infra.ops.alert_webhook_url``."""

RENDERED_HEADER = (
    "# Rendered by `driftline infra up` from the settings (infra.ops);\n"
    "# edits here are overwritten at the next start.\n"
)


def _webhook(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "webhook_configs": [{"url": url, "send_resolved": True}]}


def alertmanager_config(sink_url: str, webhook_url: str | None = None) -> dict[str, Any]:
    """Route every alert to ``sink_url``; with ``webhook_url``, to it as well.

    Both are routes under the root (the first with ``continue: true``), so one
    receiver failing never holds back the other.
    """
    route: dict[str, Any] = {
        "receiver": LOCAL_RECEIVER,
        "group_by": ["alertname", "job"],
        "group_wait": "1s",
        "group_interval": "5s",
        "repeat_interval": "1h",
    }
    receivers = [_webhook(LOCAL_RECEIVER, sink_url)]
    if webhook_url:
        route["routes"] = [
            {"receiver": LOCAL_RECEIVER, "continue": True},
            {"receiver": USER_RECEIVER},
        ]
        receivers.append(_webhook(USER_RECEIVER, webhook_url))
    return {"route": route, "receivers": receivers}


class AlertmanagerNode(PrometheusProjectServer):
    """``prometheus-alertmanager`` with config and storage under ``<state_dir>/alertmanager/``."""

    name = "alertmanager"
    what = "Alertmanager"
    port_setting = "DRIFTLINE_INFRA__OPS__ALERTMANAGER_PORT"
    executable_setting = "DRIFTLINE_INFRA__OPS__ALERTMANAGER"
    config_name = "alertmanager.yml"

    def __init__(
        self,
        state_dir: Path,
        *,
        sink_url: str,
        webhook_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 9095,
        executable: str = "prometheus-alertmanager",
    ) -> None:
        super().__init__(state_dir, host=host, port=port, executable=executable)
        self.sink_url = sink_url
        self.webhook_url = webhook_url

    @classmethod
    def from_settings(cls, settings: PlatformSettings, *, sink_url: str) -> AlertmanagerNode:
        """The Alertmanager ``driftline infra up`` runs for ``settings``."""
        ops = settings.infra.ops
        return cls(
            settings.infra.state_dir,
            sink_url=sink_url,
            webhook_url=ops.alert_webhook_url,
            port=ops.alertmanager_port,
            executable=ops.alertmanager,
        )

    @property
    def host_port(self) -> str:
        """``host:port``, as Prometheus' ``alerting`` section names it."""
        return f"{self.host}:{self.port}"

    def write_config(self) -> Path:
        """Render ``alertmanager.yml`` into the node directory; return its path."""
        config = alertmanager_config(self.sink_url, self.webhook_url)
        return write_yaml(self.config_file, config, header=RENDERED_HEADER)

    def server_flags(self) -> list[str]:
        return [f"--storage.path={self.data_dir}", "--cluster.listen-address="]
