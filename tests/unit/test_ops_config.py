"""The ops stack's configuration: what Prometheus, Alertmanager and Jaeger are started with.

Rendered from the settings into a temporary state directory and checked by the
real tools where they exist (``promtool check config``, ``amtool check-config``:
they read files and open no sockets). Starting the servers is
tests/integration/test_ops_stack.py.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from driftline.cli.app import app
from driftline.devtools.alert_sink import read_notifications
from driftline.devtools.infra import (
    LINKS_ENV,
    OTLP_ENDPOINT_ENV,
    AlertmanagerNode,
    JaegerNode,
    LocalPlatform,
    MissingToolError,
    OpsStack,
    PrometheusNode,
    alertmanager_config,
    dashboard_links_env,
    fetch_jaeger,
    free_ports,
    trace_export_env,
)
from driftline.settings import OpsSettings, PlatformSettings
from driftline.settings.models import SERVICE_NAMES

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
ADMIN_PORTS = {name: 18100 + i for i, name in enumerate(SERVICE_NAMES)}


def _settings(tmp_path: Path, **ops: Any) -> PlatformSettings:
    services = {name: {"admin": {"port": port}} for name, port in ADMIN_PORTS.items()}
    return PlatformSettings(
        infra={"state_dir": tmp_path / "state", "ops": ops},
        **services,  # type: ignore[arg-type]
    )


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is needed: sudo apt-get install prometheus prometheus-alertmanager"
    return found


def test_prometheus_scrapes_every_service_on_its_admin_port_with_the_repo_rules(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, prometheus_port=19090, alertmanager_port=19095)
    stack = OpsStack(settings, infra_dir=INFRA)
    config = _yaml(stack.prometheus.write_config())
    base = _yaml(INFRA / "prometheus" / "prometheus.yml")

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # The alert rules select series by these job names: they are the checked-in file's.
    assert list(jobs) == [job["job_name"] for job in base["scrape_configs"]]
    assert {name: jobs[f"driftline-{name}"]["static_configs"] for name in SERVICE_NAMES} == {
        name: [{"targets": [f"127.0.0.1:{port}"]}] for name, port in ADMIN_PORTS.items()
    }
    assert config["rule_files"] == [str((INFRA / "prometheus" / "alerts.yml").resolve())]
    assert config["alerting"] == {
        "alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:19095"]}]}]
    }
    assert config["global"]["scrape_interval"] == "5s"
    assert config["global"]["evaluation_interval"] == "5s"
    assert config["global"]["scrape_timeout"] == "5s"  # never longer than the interval
    assert config["global"]["external_labels"] == base["global"]["external_labels"]
    argv = stack.prometheus.prepare()
    assert "--web.listen-address=127.0.0.1:19090" in argv
    assert f"--storage.tsdb.path={tmp_path / 'state' / 'prometheus' / 'data'}" in argv

    out = subprocess.run(
        [_tool("promtool"), "check", "config", str(stack.prometheus.config_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "alerts.yml" in out.stdout + out.stderr  # the rules were found and checked


def test_prometheus_interval_and_unscrapable_services(tmp_path: Path) -> None:
    settings = _settings(tmp_path, scrape_interval_s=0.5)
    settings.serving.admin.port = 0  # picked at run time: nothing to scrape
    node = PrometheusNode.from_settings(settings, alertmanager=None, infra_dir=INFRA)
    config = _yaml(node.write_config())
    assert config["global"]["scrape_interval"] == "500ms"
    assert config["global"]["scrape_timeout"] == "500ms"
    serving = next(j for j in config["scrape_configs"] if j["job_name"] == "driftline-serving")
    assert "static_configs" not in serving
    assert "alerting" not in config
    out = subprocess.run(
        [_tool("promtool"), "check", "config", str(node.config_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_scrapes_the_services_over_https_in_secure_mode(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.security.enabled = True
    settings.security.credentials_dir = tmp_path / "credentials"  # not written yet: fine
    node = PrometheusNode.from_settings(settings, alertmanager=None, infra_dir=INFRA)
    config = _yaml(node.write_config())
    root = (tmp_path / "credentials").absolute()
    tls = {
        "ca_file": str(root / "ca.crt"),
        "cert_file": str(root / "admin" / "tls.crt"),
        "key_file": str(root / "admin" / "tls.key"),
    }
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    for name in SERVICE_NAMES:
        job = jobs[f"driftline-{name}"]
        assert job["scheme"] == "https", job
        assert job["tls_config"] == tls
    others = [j for n, j in jobs.items() if not n.startswith("driftline-")]
    assert all("tls_config" not in j for j in others), others
    # plaintext mode: no TLS anywhere
    plain = PrometheusNode.from_settings(_settings(tmp_path), alertmanager=None, infra_dir=INFRA)
    assert all("tls_config" not in j for j in _yaml(plain.write_config())["scrape_configs"])


def test_alertmanager_sends_fired_and_resolved_to_the_sink_and_the_users_webhook(
    tmp_path: Path,
) -> None:
    local_only = alertmanager_config("http://127.0.0.1:9096/alerts")
    assert local_only["route"]["receiver"] == "driftline-local"
    assert "routes" not in local_only["route"]
    assert local_only["receivers"] == [
        {
            "name": "driftline-local",
            "webhook_configs": [{"url": "http://127.0.0.1:9096/alerts", "send_resolved": True}],
        }
    ]

    settings = _settings(
        tmp_path, alert_webhook_url="https://ops.example/hook", alert_sink_port=19096
    )
    stack = OpsStack(settings, infra_dir=INFRA)
    config = _yaml(stack.alertmanager.write_config())
    route = config["route"]
    assert (route["group_wait"], route["group_interval"]) == ("1s", "5s")
    assert route["routes"] == [
        {"receiver": "driftline-local", "continue": True},
        {"receiver": "driftline-webhook"},
    ]
    urls = {r["name"]: r["webhook_configs"][0] for r in config["receivers"]}
    assert urls["driftline-local"]["url"] == "http://127.0.0.1:19096/alerts"
    assert urls["driftline-webhook"] == {"url": "https://ops.example/hook", "send_resolved": True}
    assert stack.notifications_file == tmp_path / "state" / "alertmanager" / "notifications.jsonl"
    argv = AlertmanagerNode(tmp_path, sink_url="http://x/", port=19095).prepare()
    assert "--cluster.listen-address=" in argv  # no gossip port
    assert "--web.listen-address=127.0.0.1:19095" in argv

    amtool = shutil.which("amtool")
    if amtool is None:  # amtool comes with Debian's prometheus-alertmanager
        pytest.fail("amtool is needed: sudo apt-get install prometheus-alertmanager")
    out = subprocess.run(
        [amtool, "check-config", str(stack.alertmanager.config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _endpoints(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "endpoint":
                found.append(str(value))
            else:
                found += _endpoints(value)
    elif isinstance(node, list):
        for item in node:
            found += _endpoints(item)
    return found


def test_jaeger_opens_only_the_ports_the_settings_choose(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        jaeger_ui_port=26686,
        jaeger_query_grpc_port=26685,
        jaeger_otlp_grpc_port=24317,
        jaeger_otlp_http_port=24318,
        jaeger_max_traces=500,
    )
    node = JaegerNode.from_settings(settings, infra_dir=INFRA)
    config = _yaml(node.write_config())
    claimed = {f"{c.host}:{c.port}" for c in node.port_claims()}
    assert sorted(_endpoints(config)) == sorted(claimed)
    assert claimed == {f"127.0.0.1:{p}" for p in (26686, 26685, 24317, 24318)}
    assert config["service"]["extensions"] == ["jaeger_storage", "jaeger_query"]
    assert config["service"]["telemetry"]["metrics"]["level"] == "none"  # no :8888
    assert config["extensions"]["jaeger_query"]["ui"]["assets_path"] == ""
    memory = config["extensions"]["jaeger_storage"]["backends"]["memstore"]["memory"]
    assert memory == {"max_traces": 500}
    assert node.otlp_endpoint == "http://127.0.0.1:24317"
    assert node.url == "http://127.0.0.1:26686"
    # every port names the variable that moves it, and that variable is a setting
    fields = set(OpsSettings.model_fields)
    for claim in node.port_claims():
        assert claim.setting.removeprefix("DRIFTLINE_INFRA__OPS__").lower() in fields


def test_every_ops_port_claim_names_a_real_setting(tmp_path: Path) -> None:
    stack = OpsStack(_settings(tmp_path), infra_dir=INFRA)
    fields = set(OpsSettings.model_fields)
    claims = [claim for c in stack.components for claim in c.port_claims()]
    assert len({c.port for c in claims}) == len(claims) == 7
    for claim in claims:
        assert claim.setting.removeprefix("DRIFTLINE_INFRA__OPS__").lower() in fields


def test_default_ops_ports_do_not_collide_with_the_platforms() -> None:
    s = PlatformSettings()
    ops = s.infra.ops
    ops_ports = [
        ops.prometheus_port,
        ops.alertmanager_port,
        ops.alert_sink_port,
        ops.jaeger_ui_port,
        ops.jaeger_query_grpc_port,
        ops.jaeger_otlp_grpc_port,
        ops.jaeger_otlp_http_port,
    ]
    others = [9092, s.kafka.controller_port, s.redis.port]
    others += [getattr(s, name).admin.port for name in SERVICE_NAMES]
    others += [s.features.grpc_port, s.registry.grpc_port, s.serving.grpc_port]
    assert len(set(ops_ports)) == len(ops_ports)
    assert not set(ops_ports) & set(others)


def test_ops_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_INFRA__OPS__ENABLED", "false")
    monkeypatch.setenv("DRIFTLINE_INFRA__OPS__PROMETHEUS_PORT", "19999")
    monkeypatch.setenv("DRIFTLINE_INFRA__OPS__ALERT_WEBHOOK_URL", "http://hook/")
    ops = PlatformSettings().infra.ops
    assert (ops.enabled, ops.prometheus_port, ops.alert_webhook_url) == (
        False,
        19999,
        "http://hook/",
    )


def test_the_platform_includes_the_ops_stack_unless_left_out(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with_ops = LocalPlatform(settings, infra_dir=INFRA)
    names = [c.name for c in with_ops.components]
    assert names == ["redis", "kafka", "alert-sink", "alertmanager", "prometheus", "jaeger"]
    assert with_ops._launch_order(with_ops.components)[0] is with_ops.kafka
    assert [c.name for c in LocalPlatform(settings, infra_dir=INFRA, ops=False).components] == [
        "redis",
        "kafka",
    ]
    disabled = _settings(tmp_path, enabled=False)
    assert not LocalPlatform(disabled, infra_dir=INFRA).ops_enabled
    assert LocalPlatform(disabled, infra_dir=INFRA, ops=True).ops_enabled
    # `down` stops the ops stack even when it is left out now (nothing runs: all "not running")
    outcomes = LocalPlatform(disabled, infra_dir=INFRA).down(timeout_s=1.0)
    assert [o.name for o in outcomes] == [
        "jaeger",
        "prometheus",
        "alertmanager",
        "alert-sink",
        "kafka",
        "redis",
    ]
    assert all(o.pid is None for o in outcomes)


def test_services_export_traces_to_jaeger_unless_the_user_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(OTLP_ENDPOINT_ENV, raising=False)
    settings = _settings(tmp_path, jaeger_otlp_grpc_port=24317)
    jaeger = OpsStack(settings, infra_dir=INFRA).jaeger
    assert trace_export_env(settings, jaeger) == {OTLP_ENDPOINT_ENV: "http://127.0.0.1:24317"}
    own = PlatformSettings(telemetry={"otlp_endpoint": "http://collector:4317"})
    assert trace_export_env(own, jaeger) == {}
    monkeypatch.setenv(OTLP_ENDPOINT_ENV, "http://other:4317")
    assert trace_export_env(settings, jaeger) == {}


def test_the_dashboard_links_to_the_ops_stack_unless_the_user_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LINKS_ENV, raising=False)
    settings = _settings(tmp_path, prometheus_port=29090, jaeger_ui_port=26686)
    ops = OpsStack(settings, infra_dir=INFRA)
    links = json.loads(dashboard_links_env(settings, ops)[LINKS_ENV])
    assert links == {
        "Prometheus": "http://127.0.0.1:29090",
        "Alertmanager": ops.alertmanager.url,
        "Jaeger": "http://127.0.0.1:26686",
    }
    # the monitoring service reads them back as its setting
    monkeypatch.setenv(LINKS_ENV, json.dumps(links))
    assert PlatformSettings().monitoring.links == links
    assert dashboard_links_env(settings, ops) == {}  # the user's (here: the variable) win


def test_missing_ops_executables_say_what_to_install_or_how_to_leave_them_out(
    tmp_path: Path,
) -> None:
    settings = _settings(
        tmp_path,
        prometheus="no-such-prometheus",
        go="/nonexistent/go",
        jaeger_cache=tmp_path / "jaeger-cache",  # nothing built there
    )
    stack = OpsStack(settings, infra_dir=INFRA)
    with pytest.raises(MissingToolError, match=r"apt-get install prometheus.*--no-ops"):
        PrometheusNode(
            tmp_path, targets={}, executable="/nonexistent/prometheus", infra_dir=INFRA
        ).fetch()
    with pytest.raises(MissingToolError, match=r"DRIFTLINE_INFRA__OPS__PROMETHEUS.*--no-ops"):
        stack.prometheus.fetch()
    with pytest.raises(MissingToolError, match=r"golang-go.*--no-ops"):
        stack.jaeger.fetch()


def test_an_old_go_is_refused_before_building(tmp_path: Path) -> None:
    go = tmp_path / "go"
    go.write_text("#!/bin/sh\necho go1.22.5\n")
    go.chmod(go.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(MissingToolError, match=r"Go 1\.22; building Jaeger needs Go 1\.24"):
        fetch_jaeger("1.75.0", tmp_path / "cache", go=str(go), progress=lambda _: None)


def test_a_built_jaeger_is_not_rebuilt(tmp_path: Path) -> None:
    version_dir = tmp_path / "cache" / "1.75.0"
    version_dir.mkdir(parents=True)
    (version_dir / "jaeger").write_text("binary")
    (version_dir / ".complete").write_text("jaeger 1.75.0\n")
    found = fetch_jaeger("1.75.0", tmp_path / "cache", go="no-such-go", progress=print)
    assert found == version_dir / "jaeger"


def test_read_notifications(tmp_path: Path) -> None:
    path = tmp_path / "notifications.jsonl"
    assert read_notifications(path) == []
    path.write_text('{"status":"firing"}\n\n{"status":"resolved"}\n')
    assert [n["status"] for n in read_notifications(path)] == ["firing", "resolved"]


def test_the_commands_that_start_the_platform_can_leave_the_ops_stack_out() -> None:
    runner = CliRunner()
    for command in (["infra", "up"], ["infra", "fetch"], ["up"], ["demo"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "--no-ops" in result.output, command


def test_infra_up_without_prometheus_starts_nothing_and_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter(free_ports(10))
    monkeypatch.setenv("DRIFTLINE_INFRA__STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{next(ports)}")
    monkeypatch.setenv("DRIFTLINE_KAFKA__CONTROLLER_PORT", str(next(ports)))
    monkeypatch.setenv("DRIFTLINE_REDIS__PORT", str(next(ports)))
    for name in (
        "PROMETHEUS_PORT",
        "ALERTMANAGER_PORT",
        "ALERT_SINK_PORT",
        "JAEGER_UI_PORT",
        "JAEGER_QUERY_GRPC_PORT",
        "JAEGER_OTLP_GRPC_PORT",
        "JAEGER_OTLP_HTTP_PORT",
    ):
        monkeypatch.setenv(f"DRIFTLINE_INFRA__OPS__{name}", str(next(ports)))
    monkeypatch.setenv("DRIFTLINE_INFRA__OPS__PROMETHEUS", "/nonexistent/prometheus")
    result = CliRunner().invoke(app, ["infra", "up"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "sudo apt-get install prometheus" in result.output
    assert "--no-ops" in result.output
    assert "Traceback" not in result.output
    run_dir = tmp_path / "state" / "run"
    assert not run_dir.exists() or not any(run_dir.iterdir())  # nothing was started
