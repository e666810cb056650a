"""The retraining trigger, end to end through the monitor core (no sockets)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from support.error_streams import T0, Clock, feed_error_stream, requests_of

from driftline.contracts.messages import (
    DriftEvent,
    DriftKind,
    RegistryEvent,
    RegistryEventKind,
)
from driftline.drift_detectors import ErrorRiseDetector, detections
from driftline.monitoring.core import MonitorCore
from driftline.monitoring.eval_drift import EvalConfig, _run_one, policy_hits
from driftline.monitoring.retrain_policy import RetrainPolicy, RetrainPolicyConfig
from driftline.monitoring.synthetic_streams import STREAMS, bernoulli_errors, prequential_errors
from driftline.settings import MonitoringSettings

pytestmark = pytest.mark.unit


def test_abrupt_concept_drift_gives_exactly_one_request_after_it_within_the_eval_delay() -> None:
    drift_at = 10_000
    errors = prequential_errors(STREAMS["stagger"], seed=3, n_before=drift_at, n_after=10_000)
    clock = Clock()
    core = MonitorCore(MonitoringSettings(), clock=clock)
    requests = requests_of(feed_error_stream(core, clock, errors))

    assert len(requests) == 1
    index, request = requests[0]
    # What eval-drift reports for this very stream and seed.
    cfg = EvalConfig(seeds=1, streams=("stagger",), detectors=("policy",), processes=1)
    reported = _run_one(("stagger", 3, cfg))["hits"]["policy"]
    assert reported == [index]
    assert drift_at <= index <= drift_at + 100
    assert request.since_event_time is not None
    onset = (request.since_event_time - T0).total_seconds()
    assert drift_at - 50 <= onset <= index
    assert request.model_name == "loans" and request.drift_ids
    # The detection behind it was published too, as concept drift.
    concept = [
        d
        for _, out in feed_error_stream(
            MonitorCore(MonitoringSettings(), clock=Clock()), Clock(), errors[: index + 1]
        )
        for d in out.drift
    ]
    assert [d.kind for d in concept] == [DriftKind.CONCEPT]


def test_a_stationary_stream_of_100k_events_gives_no_request() -> None:
    errors = bernoulli_errors(seed=11, p_before=0.2, p_after=0.2, n_before=100_000, n_after=0)
    det = ErrorRiseDetector()
    assert policy_hits(det, errors, cooldown_events=600) == []
    assert det.reference_rate == pytest.approx(0.2, abs=0.03)


def test_a_falling_error_gives_no_request() -> None:
    rng = random.Random(5)
    # A model still learning: error falls from 60 % to 5 %.
    learning = bytes(
        1 if rng.random() < max(0.05, 0.6 - i * 0.55 / 20_000) else 0 for i in range(30_000)
    )
    # A recovery after retraining: 50 % error, then a step down to 10 %.
    recovery = bernoulli_errors(seed=6, p_before=0.5, p_after=0.1, n_before=5_000, n_after=20_000)
    for errors in (learning, recovery):
        assert policy_hits(ErrorRiseDetector(), errors, cooldown_events=600) == []
    # The same detector does see a rise of that size (the test above is not vacuous).
    rise = bernoulli_errors(seed=6, p_before=0.1, p_after=0.5, n_before=5_000, n_after=5_000)
    assert len(policy_hits(ErrorRiseDetector(), rise, cooldown_events=600)) == 1


def test_warm_up_is_not_drift() -> None:
    # Erratic error during the warm-up, steady afterwards: nothing is reported.
    det = ErrorRiseDetector()
    rng = random.Random(2)
    warm = [rng.random() < (0.05 if (i // 300) % 2 else 0.6) for i in range(3_000)]
    steady = [rng.random() < 0.1 for _ in range(20_000)]
    assert detections(det, bytes(warm + steady)) == []


def test_one_drift_is_one_request_however_many_detections() -> None:
    policy = RetrainPolicy(RetrainPolicyConfig(cooldown_s=600))

    def drift(i: int, kind: DriftKind = DriftKind.CONCEPT) -> DriftEvent:
        return DriftEvent(
            drift_id=f"d{i}",
            model_name="loans",
            kind=kind,
            detector="error_rise",
            statistic=20.0,
            threshold=14.0,
            window=100,
            severity="critical",
            detected_at=T0 + timedelta(seconds=i),
            onset_event_time=T0,
        )

    out = [
        r for i in range(0, 600, 10) for r in policy.observe(drift(i), T0 + timedelta(seconds=i))
    ]
    assert len(out) == 1
    assert out[0].since_event_time == T0
    # data drift is reported, not a reason to retrain by default
    assert policy.observe(drift(700, DriftKind.DATA), T0 + timedelta(seconds=700)) == []
    # the same onset after the cooldown maps to the same dedup id
    again = policy.observe(drift(1300), T0 + timedelta(seconds=1300))
    assert len(again) == 1 and again[0].request_id == out[0].request_id


def test_debounce_gathers_detections_into_one_request() -> None:
    policy = RetrainPolicy(RetrainPolicyConfig(debounce_s=30, trigger_kinds=frozenset(DriftKind)))
    base = DriftEvent(
        drift_id="a",
        model_name="m",
        kind=DriftKind.DATA,
        detector="psi",
        statistic=0.4,
        threshold=0.2,
        window=1000,
        severity="warning",
        detected_at=T0,
        onset_event_time=T0 + timedelta(seconds=5),
    )
    assert policy.observe(base, T0) == []
    early = base.model_copy(update={"drift_id": "b", "onset_event_time": T0})
    assert policy.observe(early, T0 + timedelta(seconds=10)) == []
    released = policy.tick(T0 + timedelta(seconds=31))
    assert [r.drift_ids for r in released] == [["a", "b"]]
    assert released[0].since_event_time == T0


def test_a_new_champion_rebaselines_and_a_recovery_is_not_drift() -> None:
    clock = Clock()
    core = MonitorCore(MonitoringSettings(), clock=clock)
    for version in (1, 2):
        core.on_registry(
            RegistryEvent(
                event_id=f"reg-{version}",
                kind=RegistryEventKind.REGISTERED,
                model_name="loans",
                version=version,
                actor="t",
                at=T0,
            )
        )
    promoted = RegistryEvent(
        event_id="r1",
        kind=RegistryEventKind.ALIAS_SET,
        model_name="loans",
        version=1,
        alias="champion",
        actor="t",
        at=T0,
    )
    core.on_registry(promoted)
    errors = bernoulli_errors(seed=8, p_before=0.1, p_after=0.5, n_before=8_000, n_after=3_000)
    assert len(requests_of(feed_error_stream(core, clock, errors))) == 1
    core.on_registry(promoted.model_copy(update={"event_id": "r2", "version": 2}))
    assert core.models["loans"].error.reference_rate is None  # warm-up again
    assert core.policy.episode("loans") is None
