"""The examples in the libraries' docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "driftline.contracts.messages",
    "driftline.contracts.topics",
    "driftline.contracts.errors",
    "driftline.settings.models",
    "driftline.devtools.infra.prometheus_node",
    "driftline.specs.label",
    "driftline.kafkaio.record_faults",
    "driftline.kafkaio.retry",
    "driftline.online_store.memory",
    "driftline.online_store.registry",
    "driftline.online_store.cluster",
    "driftline.security.credentials",
    "driftline.security.roles",
    "driftline.security.api_keys",
    "driftline.security.redis_acl",
    "driftline.security.redis_auth",
    "driftline.security.http_tls",
    "driftline.devtools.infra.pki",
    "driftline.telemetry.consumer_health",
    "driftline.features.metrics",
    "driftline.ingestion.writer",
    "driftline.monitoring.monitor_metrics",
    "driftline.monitoring.performance_estimation",
    "driftline.serving.serving_metrics",
    "driftline.telemetry.tracing",
    "driftline.edge.errors",
    "driftline.edge.values",
    "driftline.registry_api.promotion",
    "driftline.registry_api.recurring",
    "driftline.training.recurring",
    "driftline.model_runtimes.base",
    "driftline.model_runtimes.catalog",
    "driftline.drift_detectors.error_rise",
    "driftline.drift_detectors.catalog",
    "driftline.drift_detectors.checks",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples to run"
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed (see the output)"
