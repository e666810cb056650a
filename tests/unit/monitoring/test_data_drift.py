"""Data drift and prediction drift through the monitor core (no sockets)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from driftline.contracts.messages import (
    DriftEvent,
    DriftKind,
    FeatureVector,
    Lineage,
    PredictionRecord,
    RegistryEvent,
    RegistryEventKind,
)
from driftline.drift_stats.reference import build_reference
from driftline.monitoring.core import MonitorCore
from driftline.monitoring.distribution_drift import DistributionMonitor
from driftline.settings import MonitoringSettings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def row(rng: random.Random, shifted: bool) -> dict[str, float | str]:
    return {
        "salary": rng.gauss(90_000 if shifted else 60_000, 10_000),
        "age": rng.uniform(20, 80),
        "loan": rng.expovariate(1 / 50_000),
        "car": rng.choice(["sedan", "suv", "van"]),
    }


def test_drift_injected_into_one_feature_is_reported_for_it_alone() -> None:
    rng = random.Random(4)
    reference = build_reference([row(rng, False) for _ in range(5_000)])
    core = MonitorCore(MonitoringSettings(), clock=lambda: T0)
    core.on_registry(
        RegistryEvent(
            event_id="r1",
            kind=RegistryEventKind.REGISTERED,
            model_name="loans",
            version=1,
            actor="t",
            at=T0,
            spec={"reference": reference},
            lineage=Lineage(featureset="loans", featureset_version=1),
        )
    )
    core.on_registry(
        RegistryEvent(
            event_id="r2",
            kind=RegistryEventKind.ALIAS_SET,
            model_name="loans",
            version=1,
            alias="champion",
            actor="t",
            at=T0,
        )
    )
    drift: list[tuple[int, DriftEvent]] = []
    for i in range(20_000):
        vec = FeatureVector(
            event_id=f"e{i}",
            entity_id="c",
            featureset="loans",
            featureset_version=1,
            event_time=T0 + timedelta(seconds=i),
            values=row(rng, shifted=i >= 10_000),
            produced_at=T0,
        )
        drift.extend((i, d) for d in core.on_features(vec).drift)

    assert drift, "the shifted feature was not reported"
    assert {f for _, d in drift for f in d.features} == {"salary"}
    assert all(
        i >= 10_000 and d.kind == DriftKind.DATA and d.model_name == "loans" for i, d in drift
    )
    detectors = {d.detector for _, d in drift}
    assert {"psi", "ks", "adwin"} <= detectors
    psi_event = next(d for _, d in drift if d.detector == "psi")
    assert psi_event.statistic >= psi_event.threshold and psi_event.window == 1000
    # Data drift alone does not ask for retraining (default trigger: concept only).
    assert core.policy.requests_issued == 0
    latest = core.features["loans"].latest
    assert latest["salary"]["psi"] > 1.0 > latest["age"]["psi"]


def test_a_categorical_shift_is_caught_by_jensen_shannon() -> None:
    rng = random.Random(1)
    mon = DistributionMonitor(
        reference=build_reference([{"car": rng.choice(["sedan", "suv"])} for _ in range(2000)])
    )
    found = []
    for i in range(3000):
        car = rng.choice(["sedan", "suv"]) if i < 1000 else rng.choice(["van", "suv"])
        found.extend(mon.update({"car": car}))
    assert [(f.feature, f.detector) for f in found] == [("car", "js")]
    assert found[0].record_index >= 1000


def test_prediction_drift_against_the_champions_early_outputs() -> None:
    rng = random.Random(9)
    core = MonitorCore(MonitoringSettings(), clock=lambda: T0)
    kinds: list[tuple[int, DriftEvent]] = []
    for i in range(6_000):
        p = 0.2 if i < 3_000 else 0.7
        rec = PredictionRecord(
            request_id=f"r{i}",
            entity_id="c",
            model_name="loans",
            model_version=1,
            features={},
            prediction=int(rng.random() < p),
            latency_ms=1.0,
            served_at=T0 + timedelta(seconds=i),
        )
        kinds.extend((i, d) for d in core.on_prediction(rec).drift)
    assert kinds
    assert all(
        d.kind == DriftKind.PREDICTION and d.features == ["prediction"] and i >= 3_000
        for i, d in kinds
    )
