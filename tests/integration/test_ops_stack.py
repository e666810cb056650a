"""The ops stack on free ports: real Prometheus, Alertmanager, alert sink and Jaeger.

Started the way ``driftline infra up`` starts them (:class:`OpsStack`, the same
config rendering), in a temporary state directory:

- Prometheus has loaded every rule of ``infra/prometheus/alerts.yml``, scrapes one
  ``driftline-<service>`` job per service on the admin port the settings name, and
  has found the local Alertmanager;
- an alert posted to Alertmanager reaches the local sink's JSON lines and the
  user's webhook (a second sink), both when it fires and when it resolves;
- Jaeger answers its query API and returns a span exported over OTLP/gRPC with the
  OpenTelemetry SDK (what the services use);
- every process listens on exactly the ports the settings chose, and ``stop``
  leaves no process behind.

A machine without the Jaeger binary builds it here through the same fetch code as
``driftline infra fetch`` (minutes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from driftline.devtools.alert_sink import read_notifications
from driftline.devtools.infra import AlertSinkNode, LocalComponent, OpsStack, free_ports
from driftline.devtools.infra.pidfile import pid_alive
from driftline.settings import PlatformSettings
from driftline.settings.models import SERVICE_NAMES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]  # a first Jaeger build

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
T = TypeVar("T")


def _listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (its socket inodes in /proc/net/tcp*)."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _eventually(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g}s")
        time.sleep(0.25)


class Ops:
    """The running stack, the user's webhook and the settings they came from."""

    def __init__(self, stack: OpsStack, hook: AlertSinkNode, settings: PlatformSettings) -> None:
        self.stack = stack
        self.hook = hook
        self.settings = settings


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    from_env = PlatformSettings().infra.ops  # honours DRIFTLINE_INFRA__OPS__JAEGER_CACHE, __GO
    ports = free_ports(8 + len(SERVICE_NAMES))
    hook_port = ports[7]
    services = {name: {"admin": {"port": ports[8 + i]}} for i, name in enumerate(SERVICE_NAMES)}
    settings = PlatformSettings(
        infra={
            "state_dir": tmp_path / "state",
            "ops": {
                "prometheus_port": ports[0],
                "alertmanager_port": ports[1],
                "alert_sink_port": ports[2],
                "jaeger_ui_port": ports[3],
                "jaeger_query_grpc_port": ports[4],
                "jaeger_otlp_grpc_port": ports[5],
                "jaeger_otlp_http_port": ports[6],
                "alert_webhook_url": f"http://127.0.0.1:{hook_port}/hook",
                "scrape_interval_s": 1,
                "jaeger_version": from_env.jaeger_version,
                "jaeger_cache": from_env.jaeger_cache,
                "go": from_env.go,
            },
        },
        **services,  # type: ignore[arg-type]
    )
    stack = OpsStack(settings, infra_dir=INFRA, progress=print)
    hook = AlertSinkNode(tmp_path / "user-hook", port=hook_port)
    started: list[LocalComponent] = []
    try:
        for component in [hook, *stack.components]:
            component.fetch()  # builds Jaeger if this machine has never built it
            component.start(timeout_s=120)
            started.append(component)
        yield Ops(stack, hook, settings)
    finally:
        for component in reversed(started):
            component.stop(timeout_s=20)


def _alert(name: str, *, resolved: bool) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    alert: dict[str, Any] = {
        "labels": {"alertname": name, "job": "driftline-ops-test", "severity": "info"},
        "annotations": {"summary": "posted by test_ops_stack"},
        "startsAt": (now - timedelta(seconds=30)).isoformat(),
    }
    if resolved:
        alert["endsAt"] = (now - timedelta(seconds=1)).isoformat()
    return [alert]


def _notification(path: Path, name: str, status: str) -> dict[str, Any] | None:
    for note in read_notifications(path):
        alerts = note.get("alerts")
        if not isinstance(alerts, list):
            continue
        for alert in alerts:
            if alert["labels"].get("alertname") == name and alert["status"] == status:
                return note
    return None


def test_prometheus_loads_the_rules_scrapes_every_service_and_finds_alertmanager(
    ops: Ops,
) -> None:
    prometheus = ops.stack.prometheus.url
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {(rule["type"], rule["name"]) for group in groups for rule in group["rules"]}
    rules_file = yaml.safe_load((INFRA / "prometheus" / "alerts.yml").read_text())
    expected = {
        ("alerting", r["alert"]) if "alert" in r else ("recording", r["record"])
        for group in rules_file["groups"]
        for r in group["rules"]
    }
    assert ("alerting", "DriftDetected") in loaded
    assert loaded == expected

    def scraped() -> dict[str, str] | None:
        data = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]
        found = {t["labels"]["job"]: t["scrapeUrl"] for t in data["activeTargets"]}
        return found if len(found) == len(SERVICE_NAMES) else None

    assert _eventually(scraped, 30, "the scrape targets") == {
        f"driftline-{name}": f"http://127.0.0.1:{getattr(ops.settings, name).admin.port}/metrics"
        for name in SERVICE_NAMES
    }

    def alertmanager_found() -> bool | None:
        data = httpx.get(f"{prometheus}/api/v1/alertmanagers", timeout=10).json()["data"]
        urls = [a["url"] for a in data["activeAlertmanagers"]]
        return True if f"{ops.stack.alertmanager.url}/api/v2/alerts" in urls else None

    _eventually(alertmanager_found, 30, "Prometheus discovering the local Alertmanager")


def test_an_alert_reaches_the_sink_and_the_users_webhook_firing_and_resolved(ops: Ops) -> None:
    alertmanager = ops.stack.alertmanager.url
    sink, hook = ops.stack.notifications_file, ops.hook.notifications_file
    name = "OpsStackTestAlert"

    posted = httpx.post(f"{alertmanager}/api/v2/alerts", json=_alert(name, resolved=False))
    assert posted.status_code == 200, posted.text
    fired = _eventually(lambda: _notification(sink, name, "firing"), 30, "the firing alert")
    assert fired["receiver"] == "driftline-local"
    assert fired["receivedAt"]
    assert fired["externalURL"] == alertmanager
    to_user = _eventually(lambda: _notification(hook, name, "firing"), 30, "the user's copy")
    assert to_user["receiver"] == "driftline-webhook"

    posted = httpx.post(f"{alertmanager}/api/v2/alerts", json=_alert(name, resolved=True))
    assert posted.status_code == 200, posted.text
    _eventually(lambda: _notification(sink, name, "resolved"), 30, "the resolved alert")
    _eventually(lambda: _notification(hook, name, "resolved"), 30, "the user's resolved copy")


def test_jaeger_returns_a_span_exported_over_otlp(ops: Ops) -> None:
    jaeger = ops.stack.jaeger
    assert httpx.get(f"{jaeger.url}/api/services", timeout=10).status_code == 200

    provider = TracerProvider(resource=Resource.create({"service.name": "driftline-ops-test"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=jaeger.otlp_endpoint, insecure=True))
    )
    with provider.get_tracer("test_ops_stack").start_as_current_span("ops-stack-span") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()

    def trace() -> dict[str, Any] | None:
        answer = httpx.get(f"{jaeger.url}/api/traces/{trace_id}", timeout=10)
        data = answer.json().get("data") if answer.status_code == 200 else None
        return data[0] if data else None

    found = _eventually(trace, 30, f"trace {trace_id} in Jaeger")
    assert [s["operationName"] for s in found["spans"]] == ["ops-stack-span"]
    assert {p["serviceName"] for p in found["processes"].values()} == {"driftline-ops-test"}
    services = httpx.get(f"{jaeger.url}/api/services", timeout=10).json()["data"]
    assert "driftline-ops-test" in services


def test_each_listens_only_where_the_settings_say_and_stop_leaves_nothing(ops: Ops) -> None:
    pids: dict[str, int] = {}
    for component in ops.stack.components:
        pid = component.running_pid()
        assert pid is not None, component.name
        pids[component.name] = pid
        claimed = {claim.port for claim in component.port_claims()}
        assert _listening_ports(pid) == claimed, component.name
        status = component.status()
        assert status.running and status.answering, status.describe()

    for component in reversed(ops.stack.components):
        outcome = component.stop(timeout_s=20)
        assert outcome.pid == pids[component.name] and not outcome.forced, outcome.describe()
    for name, pid in pids.items():
        assert not pid_alive(pid), f"{name} (pid {pid}) still alive after stop"
    for component in ops.stack.components:
        assert not component.pid_file.exists()
        assert not component.answering(), component.name
