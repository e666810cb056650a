"""The series alert rules watch: counters exist at 0 before their first event, and gauges
with nothing measured yet are absent (never 0).

Read through each service's own registry and ``generate_latest``, as Prometheus reads
them; no sockets.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.error_streams import T0, Clock, feed_error_stream

from driftline.contracts.messages import DlqReason, RegistryEvent, RegistryEventKind
from driftline.drift_detectors.checks import bernoulli_errors
from driftline.features.metrics import FeaturesMetrics
from driftline.ingestion.writer import OutcomeCounters
from driftline.monitoring.core import MonitorCore
from driftline.monitoring.monitor_metrics import MonitorMetrics
from driftline.online_store import EntityWrite
from driftline.serving.serving_metrics import ServingMetrics
from driftline.settings import MonitoringSettings
from driftline.telemetry import ConsumerHealth, ServiceMetrics

pytestmark = pytest.mark.unit

Sample = tuple[str, dict[str, str], float]


def _samples(registry: CollectorRegistry) -> list[Sample]:
    text = generate_latest(registry).decode()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels}`` on /metrics, None when absent."""
    found = [v for n, lab, v in _samples(registry) if n == name and lab == labels]
    assert len(found) <= 1
    return found[0] if found else None


def _registered(kind: RegistryEventKind, version: int, alias: str | None = None) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"{kind.value}-{version}-{alias}", kind=kind, model_name="loans",
        version=version, alias=alias, actor="t", at=T0,
    )  # fmt: skip


# -- monitoring ------------------------------------------------------------------------


def test_monitoring_creates_every_detection_counter_of_a_registered_model_at_zero() -> None:
    base = ServiceMetrics("monitoring")
    metrics = MonitorMetrics(base, concept_detector="error_rise")
    core = MonitorCore(MonitoringSettings())
    metrics.refresh(core)
    assert _value(base.registry, "driftline_retrain_requests_total", model="loans") is None

    # The models log names the model: every series DriftDetected sums exists at 0.
    core.on_registry(_registered(RegistryEventKind.REGISTERED, 1))
    metrics.track_known(core)
    detections = {
        (lab["kind"], lab["detector"]): v
        for n, lab, v in _samples(base.registry)
        if n == "driftline_drift_detections_total" and lab["model"] == "loans"
    }
    assert detections == {
        ("concept", "error_rise"): 0.0,
        **{("data", d): 0.0 for d in ("adwin", "psi", "ks", "js", "kswin")},
        **{("prediction", d): 0.0 for d in ("adwin", "psi", "ks", "js", "cbpe")},
    }
    assert _value(base.registry, "driftline_retrain_requests_total", model="loans") == 0.0


def test_a_detection_after_tracking_is_an_increase_from_zero() -> None:
    base = ServiceMetrics("monitoring")
    metrics = MonitorMetrics(base, concept_detector="error_rise")
    metrics.track(["loans"])
    labels = {"model": "loans", "kind": "data", "detector": "psi"}
    before = _value(base.registry, "driftline_drift_detections_total", **labels)
    metrics.detections.labels(**labels).inc()
    assert (before, _value(base.registry, "driftline_drift_detections_total", **labels)) == (
        0.0,
        1.0,
    )


def test_live_accuracy_is_absent_until_measured_and_dropped_when_a_new_champion_starts() -> None:
    base = ServiceMetrics("monitoring")
    metrics = MonitorMetrics(base, concept_detector="error_rise")
    clock = Clock()
    core = MonitorCore(MonitoringSettings(), clock=clock)
    for version in (1, 2):
        core.on_registry(_registered(RegistryEventKind.REGISTERED, version))
    core.on_registry(_registered(RegistryEventKind.ALIAS_SET, 1, "champion"))
    metrics.refresh(core)
    for name in ("driftline_live_accuracy", "driftline_live_accuracy_labelled",
                 "driftline_error_rise_statistic"):  # fmt: skip
        assert _value(base.registry, name, model="loans") is None, name

    # 3 of 10 labelled predictions wrong.
    feed_error_stream(core, clock, bytes([1, 0, 0, 1, 0, 0, 1, 0, 0, 0]))
    metrics.refresh(core)
    assert _value(base.registry, "driftline_live_accuracy", model="loans") == pytest.approx(0.7)
    assert _value(base.registry, "driftline_live_accuracy_labelled", model="loans") == 10.0
    assert _value(base.registry, "driftline_error_rise_statistic", model="loans") is not None

    # A new champion: its window is empty, so the figures go (the accuracy alert resolves).
    core.on_registry(_registered(RegistryEventKind.ALIAS_SET, 2, "champion"))
    metrics.refresh(core)
    assert _value(base.registry, "driftline_live_accuracy", model="loans") is None
    assert _value(base.registry, "driftline_live_accuracy_labelled", model="loans") is None


def test_detection_and_champion_times_say_whether_the_current_champion_drifted() -> None:
    """DriftDetected's series: each kind's last detection (0 until one) and when the
    champion was set (absent without one); a detection later than the champion is one
    the loop has not answered, a newer champion answers it."""
    from datetime import timedelta

    base = ServiceMetrics("monitoring")
    metrics = MonitorMetrics(base, concept_detector="error_rise")
    clock = Clock()
    core = MonitorCore(MonitoringSettings(), clock=clock)
    for version in (1, 2):
        core.on_registry(_registered(RegistryEventKind.REGISTERED, version))
    metrics.refresh(core)
    last = "driftline_drift_last_detected_timestamp_seconds"
    since = "driftline_champion_since_timestamp_seconds"
    assert {k: _value(base.registry, last, model="loans", kind=k)
            for k in ("concept", "data", "prediction")} == dict.fromkeys(
        ("concept", "data", "prediction"), 0.0)  # fmt: skip
    assert _value(base.registry, since, model="loans") is None

    core.on_registry(_registered(RegistryEventKind.ALIAS_SET, 1, "champion"))
    metrics.refresh(core)
    assert _value(base.registry, since, model="loans") == T0.timestamp()

    # The champion is wrong one time in ten, then one time in two: concept drift.
    errors = bernoulli_errors(seed=4, p_before=0.1, p_after=0.5, n_before=8_000, n_after=3_000)
    seen = feed_error_stream(core, clock, errors)
    detected = [(i, ev) for i, out in seen for ev in out.drift if ev.kind.value == "concept"]
    assert detected, "the error stream should have been detected as concept drift"
    metrics.refresh(core)
    at = _value(base.registry, last, model="loans", kind="concept")
    assert at == detected[-1][1].detected_at.timestamp()
    assert at is not None and at > T0.timestamp()

    clock.now = clock.now + timedelta(seconds=5)
    core.on_registry(_registered(RegistryEventKind.ALIAS_SET, 2, "champion"))
    metrics.refresh(core)
    champion = _value(base.registry, since, model="loans")
    assert champion == clock.now.timestamp() and champion > at


# -- ingestion, serving, features, consumers ----------------------------------------------


def test_ingestion_creates_every_outcome_at_zero() -> None:
    registry = CollectorRegistry()
    OutcomeCounters(registry)
    records = {
        (lab["kind"], lab["outcome"], lab["reason"], lab["via"]): v
        for n, lab, v in _samples(registry)
        if n == "driftline_ingested_records_total"
    }
    expected = {
        (kind, outcome, reason, via)
        for kind in ("event", "label")
        for via in ("kafka", "http")
        for outcome, reason in [("valid", ""), *(("dead_letter", r.value) for r in DlqReason)]
    }
    assert set(records) == expected
    assert set(records.values()) == {0.0}


def test_serving_creates_predicts_outcomes_at_zero() -> None:
    base = ServiceMetrics("serving")
    ServingMetrics(base)
    for code in ("OK", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"):
        count = _value(base.registry, "driftline_request_latency_seconds_count",
                       method="Predict", code=code)  # fmt: skip
        assert count == 0.0, code
        fast = _value(base.registry, "driftline_request_latency_seconds_bucket",
                      method="Predict", code=code, le="0.05")  # fmt: skip
        assert fast == 0.0, code


def test_features_freshness_counts_writes_by_the_age_of_their_newest_event() -> None:
    metrics = FeaturesMetrics()
    now_us = 1_000_000_000_000_000
    writes = [
        EntityWrite("fresh", {"x": (1, now_us - 2_000_000), "n": (3, now_us - 1_000_000)}),
        EntityWrite("late", {"x": (1, now_us - 60_000_000)}),
    ]
    metrics.observe_freshness("loans", writes, now_s=now_us / 1e6)
    r = metrics.registry
    name = "driftline_features_freshness_seconds"
    assert _value(r, f"{name}_count", featureset="loans") == 2.0
    # 1 s old (the newest of its values), and 60 s old: the SLO bound is 10 s.
    assert _value(r, f"{name}_bucket", featureset="loans", le="1.0") == 1.0
    assert _value(r, f"{name}_bucket", featureset="loans", le="10.0") == 1.0
    assert _value(r, f"{name}_bucket", featureset="loans", le="60.0") == 2.0


def test_consumer_health_expect_creates_the_skip_counters_at_zero() -> None:
    registry = CollectorRegistry()
    health = ConsumerHealth(registry, stall_after_s=60)
    health.expect({"driftline.models": ("unreadable", "unknown_model")})
    name = "driftline_records_skipped_total"
    assert _value(registry, name, topic="driftline.models", reason="unreadable") == 0.0
    assert _value(registry, name, topic="driftline.models", reason="unknown_model") == 0.0
    health.skip("driftline.models", 0, 7, "unknown_model", "no such model")
    assert _value(registry, name, topic="driftline.models", reason="unknown_model") == 1.0
