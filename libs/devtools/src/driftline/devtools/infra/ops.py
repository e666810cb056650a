"""The ops stack of the local platform: Prometheus, Alertmanager, the alert sink and Jaeger.

Prometheus scrapes every service's admin port and evaluates
``infra/prometheus/alerts.yml``; its alerts go to Alertmanager, which posts them
(fired and resolved) to the alert sink's JSON-lines file and, if set, to
``infra.ops.alert_webhook_url``; Jaeger receives the services' OTLP traces
(:func:`trace_export_env` points services there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from driftline.devtools.infra.alert_sink_node import AlertSinkNode
from driftline.devtools.infra.alertmanager_node import AlertmanagerNode
from driftline.devtools.infra.component import LocalComponent
from driftline.devtools.infra.jaeger_node import JaegerNode
from driftline.devtools.infra.jars import Progress, _stderr
from driftline.devtools.infra.prometheus_node import PrometheusNode
from driftline.settings import PlatformSettings

__all__ = ["LINKS_ENV", "OTLP_ENDPOINT_ENV", "OpsStack", "dashboard_links_env", "trace_export_env"]

OTLP_ENDPOINT_ENV = "DRIFTLINE_TELEMETRY__OTLP_ENDPOINT"
"""The variable that makes a service export its traces (``telemetry.otlp_endpoint``)."""

LINKS_ENV = "DRIFTLINE_MONITORING__LINKS"
"""The variable of the dashboard's header links (``monitoring.links``, JSON)."""


class OpsStack:
    """The four ops components for ``settings``, each usable on its own."""

    def __init__(
        self,
        settings: PlatformSettings,
        *,
        infra_dir: Path | None = None,
        progress: Progress = _stderr,
    ) -> None:
        ops = settings.infra.ops
        self.alert_sink = AlertSinkNode(settings.infra.state_dir, port=ops.alert_sink_port)
        self.alertmanager = AlertmanagerNode.from_settings(
            settings, sink_url=self.alert_sink.webhook_url
        )
        self.prometheus = PrometheusNode.from_settings(
            settings, alertmanager=self.alertmanager.host_port, infra_dir=infra_dir
        )
        self.jaeger = JaegerNode.from_settings(settings, infra_dir=infra_dir, progress=progress)

    @property
    def components(self) -> list[LocalComponent]:
        """In start order: what receives before what sends (Prometheus' alerts, traces)."""
        return [self.alert_sink, self.alertmanager, self.prometheus, self.jaeger]

    @property
    def notifications_file(self) -> Path:
        """The JSON lines of every Alertmanager notification (``driftline alerts`` reads it)."""
        return self.alert_sink.notifications_file


def trace_export_env(settings: PlatformSettings, jaeger: JaegerNode) -> dict[str, str]:
    """``DRIFTLINE_TELEMETRY__OTLP_ENDPOINT`` pointing at ``jaeger``, unless the user chose one.

    Empty when the settings (a config file, or the variable itself) name an
    endpoint already: the user's collector wins.
    """
    if settings.telemetry.otlp_endpoint or os.environ.get(OTLP_ENDPOINT_ENV):
        return {}
    return {OTLP_ENDPOINT_ENV: jaeger.otlp_endpoint}


def dashboard_links_env(settings: PlatformSettings, ops: OpsStack) -> dict[str, str]:
    """``DRIFTLINE_MONITORING__LINKS``: the dashboard links to this Prometheus,
    Alertmanager and Jaeger, unless the user chose links of their own."""
    if settings.monitoring.links or os.environ.get(LINKS_ENV):
        return {}
    links = {
        "Prometheus": ops.prometheus.url,
        "Alertmanager": ops.alertmanager.url,
        "Jaeger": ops.jaeger.url,
    }
    return {LINKS_ENV: json.dumps(links)}
