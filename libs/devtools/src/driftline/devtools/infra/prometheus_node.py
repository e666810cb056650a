"""Prometheus scraping every service and evaluating ``infra/prometheus/alerts.yml``.

Its configuration is ``infra/prometheus/prometheus.yml`` (the one file that names
the scrape jobs, which the alert rules select by ``job``) with what the settings
decide put in: each ``driftline-<service>`` job's target is that service's admin
port, the rule files are the repository's (absolute paths), alerts go to the local
Alertmanager and both intervals are ``infra.ops.scrape_interval_s``.

In secure mode the services' admin ports speak HTTPS only, so the ``driftline-*`` jobs
scrape with ``scheme: https`` and a ``tls_config`` from
:func:`driftline.security.http_tls.prometheus_tls_config` (the CA, and the ``admin``
identity's certificate and key: paths, not contents). Prometheus itself stays plain
HTTP on loopback: it is the local dev ops stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from driftline.devtools.infra.errors import InfraError
from driftline.devtools.infra.http_component import PrometheusProjectServer
from driftline.devtools.infra.layout import find_infra_dir
from driftline.devtools.infra.templates import write_yaml
from driftline.security import http_tls
from driftline.settings import AdminSettings, PlatformSettings
from driftline.settings.models import SERVICE_NAMES

__all__ = [
    "JOB_PREFIX",
    "PrometheusNode",
    "duration",
    "render_prometheus_config",
    "service_targets",
]

JOB_PREFIX = "driftline-"
"""Scrape job ``driftline-<service>`` scrapes service ``<service>``."""

SCRAPE_IDENTITY = "admin"
"""Whose client certificate Prometheus presents to the services in secure mode."""

MAX_SCRAPE_TIMEOUT_S = 10.0
"""Scrape timeout (``prometheus.yml``'s), or the interval when that is shorter."""

RENDERED_HEADER = (
    "# Rendered by `driftline infra up` from infra/prometheus/prometheus.yml and the\n"
    "# settings (infra.ops, <service>.admin); edits here are overwritten at the next start.\n"
)


def duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds as ``5s``, anything else in milliseconds.

    >>> duration(5.0), duration(0.5), duration(90)
    ('5s', '500ms', '90s')
    """
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _scrape_host(admin: AdminSettings) -> str:
    return "127.0.0.1" if admin.host in ("0.0.0.0", "", "::") else admin.host


def service_targets(settings: PlatformSettings) -> dict[str, str | None]:
    """Each service's ``host:port`` to scrape; ``None`` for an admin port of 0 (picked at run)."""
    targets: dict[str, str | None] = {}
    for name in SERVICE_NAMES:
        admin: AdminSettings = getattr(settings, name).admin
        targets[name] = f"{_scrape_host(admin)}:{admin.port}" if admin.port else None
    return targets


def render_prometheus_config(
    base: Mapping[str, Any],
    base_dir: Path,
    *,
    targets: Mapping[str, str | None],
    alertmanager: str | None,
    interval_s: float,
    tls_config: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``base`` (the parsed ``prometheus.yml``) with targets, rule paths, alerting and intervals.

    A ``driftline-<service>`` job whose service has no target (admin port 0) keeps
    its name and scrapes nothing; a job of another name is kept as it is. Relative
    ``rule_files`` are resolved against ``base_dir``. With ``tls_config`` (secure mode)
    every ``driftline-<service>`` job scrapes over HTTPS with it.
    """
    config = dict(base)
    glob = dict(config.get("global") or {})
    glob["scrape_interval"] = duration(interval_s)
    glob["evaluation_interval"] = duration(interval_s)
    # Prometheus refuses a scrape timeout longer than the interval.
    glob["scrape_timeout"] = duration(min(MAX_SCRAPE_TIMEOUT_S, interval_s))
    config["global"] = glob
    config["rule_files"] = [
        str((base_dir / rule).resolve()) for rule in config.get("rule_files") or []
    ]
    jobs: list[dict[str, Any]] = []
    for job in config.get("scrape_configs") or []:
        job = dict(job)
        name = str(job.get("job_name", ""))
        service = name.removeprefix(JOB_PREFIX)
        if name.startswith(JOB_PREFIX) and service in targets:
            job.pop("static_configs", None)
            target = targets[service]
            if target is not None:
                job["static_configs"] = [{"targets": [target]}]
            if tls_config is not None:
                job["scheme"] = "https"
                job["tls_config"] = dict(tls_config)
        jobs.append(job)
    named = {str(job.get("job_name", "")).removeprefix(JOB_PREFIX) for job in jobs}
    missing = sorted(set(targets) - named)
    if missing:
        raise InfraError(
            f"{base_dir / 'prometheus.yml'} has no scrape job for {', '.join(missing)} "
            f"(expected job_name {JOB_PREFIX}<service>)"
        )
    config["scrape_configs"] = jobs
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


class PrometheusNode(PrometheusProjectServer):
    """``prometheus`` with its rendered config and TSDB under ``<state_dir>/prometheus/``."""

    name = "prometheus"
    what = "Prometheus"
    port_setting = "DRIFTLINE_INFRA__OPS__PROMETHEUS_PORT"
    executable_setting = "DRIFTLINE_INFRA__OPS__PROMETHEUS"
    config_name = "prometheus.yml"

    def __init__(
        self,
        state_dir: Path,
        *,
        targets: Mapping[str, str | None],
        host: str = "127.0.0.1",
        port: int = 9090,
        alertmanager: str | None = None,
        scrape_interval_s: float = 5.0,
        retention: str = "2d",
        executable: str = "prometheus",
        infra_dir: Path | None = None,
        tls_config: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(state_dir, host=host, port=port, executable=executable)
        self.targets = dict(targets)
        self.tls_config = None if tls_config is None else dict(tls_config)
        self.alertmanager = alertmanager
        self.scrape_interval_s = scrape_interval_s
        self.retention = retention
        self.infra_dir = infra_dir

    @classmethod
    def from_settings(
        cls,
        settings: PlatformSettings,
        *,
        alertmanager: str | None,
        infra_dir: Path | None = None,
    ) -> PrometheusNode:
        """The Prometheus ``driftline infra up`` runs for ``settings``."""
        ops = settings.infra.ops
        return cls(
            settings.infra.state_dir,
            targets=service_targets(settings),
            port=ops.prometheus_port,
            alertmanager=alertmanager,
            scrape_interval_s=ops.scrape_interval_s,
            retention=ops.retention,
            executable=ops.prometheus,
            infra_dir=infra_dir,
            tls_config=http_tls.prometheus_tls_config(settings.security, SCRAPE_IDENTITY),
        )

    def write_config(self) -> Path:
        """Render ``prometheus.yml`` into the node directory; return its path."""
        base_file = find_infra_dir(self.infra_dir) / "prometheus" / "prometheus.yml"
        base = yaml.safe_load(base_file.read_text(encoding="utf-8"))
        config = render_prometheus_config(
            base,
            base_file.parent,
            targets=self.targets,
            alertmanager=self.alertmanager,
            interval_s=self.scrape_interval_s,
            tls_config=self.tls_config,
        )
        return write_yaml(self.config_file, config, header=RENDERED_HEADER)

    def server_flags(self) -> list[str]:
        return [
            f"--storage.tsdb.path={self.data_dir}",
            f"--storage.tsdb.retention.time={self.retention}",
            "--web.enable-lifecycle",
        ]
