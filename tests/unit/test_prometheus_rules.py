"""infra/prometheus: promtool accepts the scrape config and rules, and the rule tests pass.

promtool (Debian's ``prometheus`` package, ``make system``) runs as a subprocess;
``check config``, ``check rules`` and ``test rules`` read files only and open no sockets.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from driftline.features.metrics import FeaturesMetrics
from driftline.ingestion.writer import OutcomeCounters
from driftline.monitoring.monitor_metrics import MonitorMetrics
from driftline.registry.registry_metrics import RegistryMetrics
from driftline.serving.serving_metrics import ServingMetrics
from driftline.settings import (
    FeaturesSettings,
    IngestionSettings,
    MonitoringSettings,
    RegistrySettings,
    ServingSettings,
    TrainingSettings,
)
from driftline.telemetry import ConsumerHealth, ServiceMetrics
from driftline.training.training_metrics import TrainingCollector

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "infra" / "prometheus"

# The service-level-objective alerts issue 7 asks for.
SLO_ALERTS = (
    "PredictLatencyP99High",
    "ErrorRatioHigh",
    "ConsumerLagHigh",
    "NoData",
    "ServiceDown",
    "DriftDetected",
    "AccuracyBelowFloor",
    "ChampionTooOld",
    "DeadLetterRatioHigh",
    "ConsumerStalled",
    "RecordsSkipped",
    # Issue 15: retrain requests for a model Driftline cannot retrain are kept, not dropped.
    "RetrainUnserved",
    # Issue 17: multi-window, multi-burn-rate alerts on the service-level objectives.
    "PredictAvailabilityBudgetBurn",
    "PredictLatencyBudgetBurn",
    "FeatureFreshnessBudgetBurn",
    "ConsumerLagBudgetBurn",
    # Issue 18: the label-free accuracy estimate (CBPE) fell below its floor.
    "EstimatedAccuracyDrop",
    # Issue 19: training's label join dropped waiting records at its memory cap.
    "LabelJoinOverCap",
)

# The burn-rate alerts: each SLO's (error budget, recorded ratio), per the workbook's table.
BUDGETS = {
    "PredictAvailabilityBudgetBurn": ("0.001", "job:driftline_predict_errors:ratio_rate"),
    "PredictLatencyBudgetBurn": ("0.01", "job:driftline_predict_slow:ratio_rate"),
    "FeatureFreshnessBudgetBurn": (
        "0.01",
        "job_featureset:driftline_features_stale:ratio_rate",
    ),
    "ConsumerLagBudgetBurn": ("0.01", "job_topic:driftline_consumer_lag_over_slo:ratio_rate"),
}
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

# Series the rules read that no service exposes yet; the owning service is to add them
# under exactly this name (see the rule's description in alerts.yml).
NOT_YET_EXPOSED: set[str] = set()

SERVICE_PORTS = {
    "ingestion": IngestionSettings().admin.port,
    "features": FeaturesSettings().admin.port,
    "training": TrainingSettings().admin.port,
    "registry": RegistrySettings().admin.port,
    "serving": ServingSettings().admin.port,
    "monitoring": MonitoringSettings().admin.port,
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe is not None, (
        "promtool is not on PATH: install Debian's prometheus package "
        "(`sudo apt-get install prometheus`, or `make system` as root)"
    )
    return subprocess.run(
        [exe, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


@functools.cache
def _load(name: str) -> Any:
    """A parsed YAML file of infra/prometheus (cached: callers must not mutate it)."""
    return yaml.safe_load((PROMETHEUS_DIR / name).read_text())


def _all_rules() -> list[dict[str, Any]]:
    return [rule for group in _load("alerts.yml")["groups"] for rule in group["rules"]]


def _alert_rules() -> dict[str, list[dict[str, Any]]]:
    """Alert name -> its rules: one, or a page and a ticket (an SLO's burn-rate alert)."""
    rules: dict[str, list[dict[str, Any]]] = {}
    for rule in _all_rules():
        if "alert" in rule:
            same = rules.setdefault(rule["alert"], [])
            severity = rule["labels"]["severity"]
            assert all(r["labels"]["severity"] != severity for r in same), (
                f"alert {rule['alert']} is defined twice with severity {severity}"
            )
            same.append(rule)
    return rules


def _rule_cases(alert: str) -> list[dict[str, Any]]:
    return [
        case
        for test in _load("alerts_test.yml")["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert
    ]


def _exposed_series() -> dict[str, set[str]]:
    """Every series name the services' metric classes can put on /metrics, with the label
    names its samples carry (besides ``job`` and ``instance``, added by the scrape)."""
    registries: list[CollectorRegistry] = [FeaturesMetrics().registry]
    for service, extra in (
        ("serving", ServingMetrics),
        ("registry", RegistryMetrics),
        ("monitoring", MonitorMetrics),
    ):
        base = ServiceMetrics(service)
        extra(base)
        registries.append(base.registry)
    training = ServiceMetrics("training")
    training.registry.register(TrainingCollector([]))
    registries.append(training.registry)
    ingestion = ServiceMetrics("ingestion")
    OutcomeCounters(ingestion.registry)
    ConsumerHealth(ingestion.registry, stall_after_s=60)
    registries.append(ingestion.registry)

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names: dict[str, set[str]] = {}
    for registry in registries:
        # A labelled metric without children declares its label names only here.
        collectors = registry._collector_to_names
        declared = {
            name: set(getattr(collector, "_labelnames", ()))
            for collector, family_names in collectors.items()
            for name in family_names
        }
        for family in registry.collect():
            for suffix in suffixes.get(family.type, ("",)):
                labels = names.setdefault(family.name + suffix, {"job", "instance"})
                labels |= declared.get(family.name + suffix, set())
                labels.update(k for sample in family.samples for k in sample.labels)
                # A custom collector's family declares its labels even without samples.
                labels.update(getattr(family, "_labelnames", ()))
                if suffix == "_bucket":
                    labels.add("le")
    return names


def test_promtool_check_rules_accepts_the_alert_rules() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    _assert_ok(result)
    assert f"SUCCESS: {len(_all_rules())} rules found" in result.stdout


def test_promtool_check_config_accepts_the_scrape_config_and_its_rule_files() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    _assert_ok(result)
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    _assert_ok(result)
    assert "SUCCESS" in result.stdout


def test_scrape_config_has_one_job_per_service_on_its_default_admin_port() -> None:
    config = _load("prometheus.yml")
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert jobs == {f"driftline-{s}": [f"127.0.0.1:{port}"] for s, port in SERVICE_PORTS.items()}


@pytest.mark.parametrize("alert", SLO_ALERTS)
def test_slo_alert_is_defined_with_severity_hold_and_instructions(alert: str) -> None:
    rules = _alert_rules().get(alert)
    assert rules, f"alerts.yml has no alert {alert}"
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert "for" in rule, f"{alert} has no `for:` duration"
        assert rule["annotations"]["summary"].strip()
        assert len(rule["annotations"]["description"]) > 80, f"{alert} tells on-call too little"


def test_every_alert_is_in_the_list_above() -> None:
    assert set(_alert_rules()) == set(SLO_ALERTS)


@pytest.mark.parametrize("alert", SLO_ALERTS)
def test_every_alert_links_a_runbook_that_says_how_to_look_and_what_to_do(alert: str) -> None:
    for rule in _alert_rules()[alert]:
        assert rule["annotations"].get("runbook") == f"docs/runbooks/{alert}.md", (
            f"{alert}: annotations.runbook must be docs/runbooks/{alert}.md"
        )
    runbook = ROOT / "docs" / "runbooks" / f"{alert}.md"
    assert runbook.is_file(), f"{runbook} does not exist"
    text = runbook.read_text()
    for heading in ("## What ", "## How to look", "## What to do"):
        assert heading in text, f"{runbook.name} has no {heading!r} section"


@pytest.mark.parametrize("alert", sorted(BUDGETS))
def test_burn_rate_alerts_have_the_workbooks_windows_and_factors(alert: str) -> None:
    budget, ratio = BUDGETS[alert]
    recorded = {rule["record"] for rule in _all_rules() if "record" in rule}
    assert {ratio + w for w in WINDOWS} <= recorded
    exprs = {rule["labels"]["severity"]: " ".join(rule["expr"].split()) for rule in
             _alert_rules()[alert]}  # fmt: skip
    assert set(exprs) == {"critical", "warning"}
    for severity, pairs in (
        ("critical", (("1h", "5m", f"14.4 * {budget}"), ("6h", "30m", f"6 * {budget}"))),
        ("warning", (("1d", "2h", f"3 * {budget}"), ("3d", "6h", budget))),
    ):
        for long, short, threshold in pairs:
            bound = f"({threshold})" if "*" in threshold else threshold
            both = f"{ratio}{long} > {bound} and {ratio}{short} > {bound}"
            assert both in exprs[severity], f"{alert} {severity}: no `{both}`"


@pytest.mark.parametrize("alert", SLO_ALERTS)
def test_slo_alert_has_a_firing_case_and_a_quiet_case(alert: str) -> None:
    cases = _rule_cases(alert)
    assert any(case["exp_alerts"] for case in cases), f"no test case fires {alert}"
    assert any(not case["exp_alerts"] for case in cases), f"no test case keeps {alert} quiet"


# A series selector: a name not part of a recorded series' name (level:name:operations).
SELECTOR = re.compile(r"(?<![\w:])(driftline_[a-z0-9_]+)(?:\{([^}]*)\})?")
BY_CLAUSE = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")


def test_every_series_the_rules_read_is_exposed_by_a_service() -> None:
    exposed = _exposed_series()
    referenced = {name for rule in _all_rules() for name, _ in SELECTOR.findall(rule["expr"])}
    missing = referenced - set(exposed) - NOT_YET_EXPOSED
    assert not missing, f"rules read series no service exposes: {sorted(missing)}"


def test_every_label_a_rule_selects_on_is_one_its_series_carries() -> None:
    exposed = _exposed_series()
    for rule in _all_rules():
        expr = rule["expr"]
        for name, matchers in SELECTOR.findall(expr):
            used = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", matchers))
            unknown = used - exposed[name]
            assert not unknown, (
                f"{rule.get('alert') or rule.get('record')}: {name} has no label(s) "
                f"{sorted(unknown)} (it has {sorted(exposed[name])})"
            )
        series = [name for name, _ in SELECTOR.findall(expr)]
        if len(series) == 1:
            grouping = {g.strip() for clause in BY_CLAUSE.findall(expr) for g in
                        clause.split(",") if g.strip()}  # fmt: skip
            unknown = grouping - exposed[series[0]]
            assert not unknown, f"{rule.get('alert') or rule.get('record')}: by {unknown}"
