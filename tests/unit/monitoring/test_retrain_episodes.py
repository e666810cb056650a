"""Which champion changes end a drift episode, and where its retraining starts (no sockets)."""

from __future__ import annotations

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
    RetrainRequest,
    ValidLabel,
)
from driftline.monitoring.core import MonitorCore
from driftline.monitoring.retrain_policy import RetrainPolicy, RetrainPolicyConfig
from driftline.monitoring.synthetic_streams import bernoulli_errors
from driftline.settings import MonitoringSettings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ONSET = T0 + timedelta(seconds=100)


def _drift(i: int, at: datetime) -> DriftEvent:
    return DriftEvent(
        drift_id=f"d{i}", model_name="loans", kind=DriftKind.CONCEPT, detector="error_rise",
        statistic=20.0, threshold=14.0, window=100, severity="critical", detected_at=at,
        onset_event_time=ONSET,
    )  # fmt: skip


def test_a_champion_trained_before_the_onset_does_not_end_the_episode() -> None:
    policy = RetrainPolicy(RetrainPolicyConfig(cooldown_s=600))
    t = T0 + timedelta(seconds=150)
    [request] = policy.observe(_drift(1, t), t)
    # A snapshot of data up to just before the onset is promoted: the drift is not answered,
    # so the episode (and its cooldown) goes on and a further detection asks for nothing.
    assert policy.champion_changed("loans", ONSET - timedelta(seconds=1)) == "kept"
    assert policy.episode("loans") is not None
    later = t + timedelta(seconds=60)
    assert policy.observe(_drift(2, later), later) == []
    # The retraining lands (it learned from data after the onset): the episode is over,
    # and a detection after that is a new drift with a request of its own.
    assert policy.champion_changed("loans", ONSET + timedelta(seconds=30)) == "closed"
    assert policy.episode("loans") is None
    after = later + timedelta(seconds=60)
    new_drift = _drift(3, after).model_copy(update={"onset_event_time": after})
    [second] = policy.observe(new_drift, after)
    assert second.request_id != request.request_id
    assert policy.champion_changed("loans", None) == "closed"  # unknown lineage: not judged


def test_a_champion_change_during_the_debounce_does_not_cancel_the_request() -> None:
    policy = RetrainPolicy(RetrainPolicyConfig(debounce_s=30))
    t = T0 + timedelta(seconds=150)
    assert policy.observe(_drift(1, t), t) == []
    assert policy.champion_changed("loans", ONSET - timedelta(seconds=5)) == "kept"
    released = policy.tick(t + timedelta(seconds=31))
    assert [r.since_event_time for r in released] == [ONSET]


def _vector(i: int, at: datetime) -> FeatureVector:
    return FeatureVector(
        event_id=f"e{i}", entity_id=f"c{i % 5}", event_time=at, featureset="loans",
        featureset_version=1, values={"x": float(i % 10)}, produced_at=at,
    )  # fmt: skip


def _registered(version: int, trained_until: datetime) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"reg-{version}", kind=RegistryEventKind.REGISTERED, model_name="loans",
        version=version, actor="training", at=T0,
        lineage=Lineage(featureset="loans", featureset_version=1, event_time_from=T0,
                        event_time_to=trained_until, examples=1000),
    )  # fmt: skip


def _champion(version: int) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"alias-{version}", kind=RegistryEventKind.ALIAS_SET, model_name="loans",
        version=version, alias="champion", actor="training", at=T0,
    )  # fmt: skip


def test_the_onset_is_an_event_time_and_only_a_champion_that_saw_it_ends_the_episode() -> None:
    # Serving answers 300 s after each event happened (a producer running behind):
    # the request's ``since`` must still be the drift's event time, the scale training
    # selects examples on, not the time the predictions were served.
    lag = timedelta(seconds=300)
    now = [T0]
    core = MonitorCore(MonitoringSettings(detector={"warmup": 2000}), clock=lambda: now[0])
    core.on_registry(_registered(1, T0))
    core.on_registry(_champion(1))
    drift_at = 4000
    errors = bernoulli_errors(seed=5, p_before=0.05, p_after=0.5, n_before=drift_at, n_after=2000)
    requests: list[tuple[int, RetrainRequest]] = []
    for i, wrong in enumerate(errors):
        at = T0 + timedelta(seconds=i)
        now[0] = at + lag
        core.on_features(_vector(i, at))
        prediction = PredictionRecord(
            request_id=f"r{i}", event_id=f"e{i}", entity_id=f"c{i % 5}", model_name="loans",
            model_version=1, features={}, prediction=1, latency_ms=1.0, served_at=at + lag,
        )  # fmt: skip
        label = ValidLabel(
            event_id=f"e{i}", entity_id=f"c{i % 5}", event_time=at + lag,
            label=0 if wrong else 1, ingested_at=at + lag,
        )  # fmt: skip
        out = core.on_prediction(prediction)
        out.extend(core.on_label(label))
        requests.extend((i, r) for r in out.retrain)
        if requests and i > requests[0][0] + 50:
            break
    [(asked_at, request)] = requests
    assert asked_at > drift_at
    drift_time = T0 + timedelta(seconds=drift_at)
    assert request.since_event_time is not None
    assert abs(request.since_event_time - drift_time) < timedelta(seconds=200)  # not + 300 s lag

    # A snapshot trained up to the onset is promoted: the episode stays open.
    core.on_registry(_registered(2, request.since_event_time - timedelta(seconds=1)))
    core.on_registry(_champion(2))
    assert core.models["loans"].champion_version == 2
    assert core.policy.episode("loans") is not None
    # The retraining's candidate, trained on data after the onset, ends it.
    core.on_registry(_registered(3, drift_time + timedelta(seconds=1500)))
    core.on_registry(_champion(3))
    assert core.policy.episode("loans") is None


def test_a_drift_during_the_detector_warm_up_starts_no_earlier_than_the_watching() -> None:
    # A new champion a little before the drift: the detector warms up again (500 outcomes
    # into its reference after a lag of 400) and starts watching after the drift.  The
    # request's ``since`` must not reach back to the start of the warm-up, where the
    # old concept still held.
    now = [T0]
    core = MonitorCore(MonitoringSettings(detector={"warmup": 500}), clock=lambda: now[0])
    for version in (1, 2):  # registered without lineage: nothing says what they learned
        core.on_registry(
            RegistryEvent(
                event_id=f"reg-{version}",
                kind=RegistryEventKind.REGISTERED,
                model_name="loans",
                version=version,
                actor="training",
                at=T0,
            )
        )
    core.on_registry(_champion(1))
    promoted_at, drift_at, n = 2000, 2700, 4500
    errors = bernoulli_errors(seed=9, p_before=0.05, p_after=0.5, n_before=drift_at, n_after=n)
    requests: list[RetrainRequest] = []
    for i, wrong in enumerate(errors):
        if i == promoted_at:
            core.on_registry(_champion(2))
        version = 1 if i < promoted_at else 2
        at = T0 + timedelta(seconds=i)
        now[0] = at
        core.on_features(_vector(i, at))
        prediction = PredictionRecord(
            request_id=f"r{i}", event_id=f"e{i}", entity_id=f"c{i % 5}", model_name="loans",
            model_version=version, features={}, prediction=1, latency_ms=1.0, served_at=at,
        )  # fmt: skip
        label = ValidLabel(
            event_id=f"e{i}", entity_id=f"c{i % 5}", event_time=at, label=0 if wrong else 1,
            ingested_at=at,
        )  # fmt: skip
        out = core.on_prediction(prediction)
        out.extend(core.on_label(label))
        requests.extend(out.retrain)
        if requests:
            break
    [request] = requests
    watched_from = T0 + timedelta(seconds=promoted_at + 400 + 500 - 1)
    assert request.since_event_time is not None
    assert request.since_event_time >= watched_from > T0 + timedelta(seconds=drift_at)
