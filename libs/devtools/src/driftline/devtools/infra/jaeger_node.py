"""Jaeger (v2, all in one) receiving the services' OTLP traces, in memory, with its query API."""

from __future__ import annotations

import json
from pathlib import Path

from driftline.devtools.infra.component import PortClaim
from driftline.devtools.infra.http_component import HttpComponent, or_without_ops
from driftline.devtools.infra.jaeger_build import fetch_jaeger
from driftline.devtools.infra.jars import Progress, _stderr
from driftline.devtools.infra.layout import find_infra_dir
from driftline.devtools.infra.templates import render_template_file
from driftline.settings import OpsSettings, PlatformSettings

__all__ = ["JaegerNode"]

_SETTING = "DRIFTLINE_INFRA__OPS__"


class JaegerNode(HttpComponent):
    """The ``jaeger`` binary built by :func:`fetch_jaeger`, with ``infra/jaeger/config.yaml``.

    Every port it opens comes from the arguments (``infra.ops``): OTLP gRPC and
    HTTP in, query HTTP (UI and ``/api``) and gRPC out. Ready once ``GET
    /api/services`` answers. Traces live in memory: a restart empties it.
    """

    name = "jaeger"
    what = "Jaeger's query UI and API"
    port_setting = f"{_SETTING}JAEGER_UI_PORT"
    ready_path = "/api/services"

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        ui_port: int = 16686,
        query_grpc_port: int = 16685,
        otlp_grpc_port: int = 4317,
        otlp_http_port: int = 4318,
        max_traces: int = 100_000,
        ui_assets: Path | None = None,
        version: str | None = None,
        cache: Path | None = None,
        go: str = "go",
        infra_dir: Path | None = None,
        progress: Progress = _stderr,
    ) -> None:
        super().__init__(state_dir, host=host, port=ui_port)
        defaults = OpsSettings()
        self.query_grpc_port = query_grpc_port
        self.otlp_grpc_port = otlp_grpc_port
        self.otlp_http_port = otlp_http_port
        self.max_traces = max_traces
        self.ui_assets = ui_assets
        self.version = version or defaults.jaeger_version
        self.cache = (cache or defaults.jaeger_cache).expanduser()
        self.go = go
        self.infra_dir = infra_dir
        self.progress = progress
        self.config_file = self.node_dir / "config.yaml"

    @classmethod
    def from_settings(
        cls,
        settings: PlatformSettings,
        *,
        infra_dir: Path | None = None,
        progress: Progress = _stderr,
    ) -> JaegerNode:
        """The Jaeger ``driftline infra up`` runs for ``settings``."""
        ops = settings.infra.ops
        return cls(
            settings.infra.state_dir,
            ui_port=ops.jaeger_ui_port,
            query_grpc_port=ops.jaeger_query_grpc_port,
            otlp_grpc_port=ops.jaeger_otlp_grpc_port,
            otlp_http_port=ops.jaeger_otlp_http_port,
            max_traces=ops.jaeger_max_traces,
            ui_assets=ops.jaeger_ui_assets,
            version=ops.jaeger_version,
            cache=ops.jaeger_cache,
            go=ops.go,
            infra_dir=infra_dir,
            progress=progress,
        )

    @property
    def otlp_endpoint(self) -> str:
        """The OTLP/gRPC endpoint services export to (``DRIFTLINE_TELEMETRY__OTLP_ENDPOINT``)."""
        return f"http://{self.host}:{self.otlp_grpc_port}"

    @property
    def otlp_http_endpoint(self) -> str:
        """The OTLP/HTTP endpoint (``/v1/traces`` under it)."""
        return f"http://{self.host}:{self.otlp_http_port}"

    @property
    def address(self) -> str:
        return f"{self.url} (OTLP gRPC {self.host}:{self.otlp_grpc_port})"

    def port_claims(self) -> list[PortClaim]:
        more = [
            (self.query_grpc_port, "Jaeger's query gRPC API", "JAEGER_QUERY_GRPC_PORT"),
            (self.otlp_grpc_port, "Jaeger's OTLP/gRPC receiver", "JAEGER_OTLP_GRPC_PORT"),
            (self.otlp_http_port, "Jaeger's OTLP/HTTP receiver", "JAEGER_OTLP_HTTP_PORT"),
        ]
        return [
            *super().port_claims(),
            *(PortClaim(self.host, port, what, _SETTING + name) for port, what, name in more),
        ]

    def fetch(self) -> Path:
        """The binary, built with Go the first time (minutes; progress lines meanwhile)."""
        with or_without_ops():
            return fetch_jaeger(self.version, self.cache, go=self.go, progress=self.progress)

    def write_config(self) -> Path:
        """Render ``config.yaml`` into the node directory; return its path."""
        assets = str(self.ui_assets.expanduser().absolute()) if self.ui_assets else ""
        return render_template_file(
            find_infra_dir(self.infra_dir) / "jaeger" / "config.yaml.template",
            self.config_file,
            {
                "host": self.host,
                "ui_port": self.port,
                "query_grpc_port": self.query_grpc_port,
                "otlp_grpc_port": self.otlp_grpc_port,
                "otlp_http_port": self.otlp_http_port,
                "max_traces": self.max_traces,
                "ui_assets": json.dumps(assets),  # a JSON string is a YAML string
            },
        )

    def prepare(self) -> list[str]:
        binary = self.fetch()
        self.write_config()
        return [str(binary), "--config", str(self.config_file)]
