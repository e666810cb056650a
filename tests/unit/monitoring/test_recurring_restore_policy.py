"""An earlier champion restored for the episode's request closes the episode, though it
was trained before the onset: its concept came back (no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support.error_streams import Clock, feed_error_stream, requests_of

from driftline.contracts.messages import (
    DriftEvent,
    DriftKind,
    Lineage,
    RegistryEvent,
    RegistryEventKind,
)
from driftline.drift_detectors.checks import bernoulli_errors
from driftline.monitoring.core import MonitorCore
from driftline.monitoring.retrain_policy import RetrainPolicy, RetrainPolicyConfig
from driftline.settings import MonitoringSettings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ONSET = T0 + timedelta(seconds=100)


def _drift(i: int, at: datetime, onset: datetime = ONSET) -> DriftEvent:
    return DriftEvent(
        drift_id=f"d{i}", model_name="loans", kind=DriftKind.CONCEPT, detector="error_rise",
        statistic=20.0, threshold=14.0, window=100, severity="critical", detected_at=at,
        onset_event_time=onset,
    )  # fmt: skip


def test_a_restoration_for_the_request_closes_the_episode_and_the_next_drift_asks_again() -> None:
    policy = RetrainPolicy(RetrainPolicyConfig(cooldown_s=600))
    t = T0 + timedelta(seconds=150)
    [request] = policy.observe(_drift(1, t), t)
    old = T0 - timedelta(days=1)  # the restored champion learned its concept long ago
    # Another alias change trained before the onset (a person's rollback) answers nothing.
    assert policy.champion_changed("loans", old, trigger="") == "kept"
    assert policy.champion_changed("loans", old, trigger="retrain-loans-other") == "kept"
    # Training restored it for this very request: the drift is answered.
    assert policy.champion_changed("loans", old, trigger=request.request_id) == "closed"
    assert policy.episode("loans") is None
    # So the concept leaving again within the old cooldown is a new episode with a request.
    later = t + timedelta(seconds=60)
    [again] = policy.observe(_drift(2, later, onset=later), later)
    assert again.request_id != request.request_id


@pytest.mark.parametrize(("trigger", "closed"), [("request", True), (None, False)])
def test_the_monitor_closes_an_episode_on_a_restoration_for_its_request(
    trigger: str | None, closed: bool
) -> None:
    """An earlier champion (trained before the onset) set back for the episode's own
    retrain request answers the drift (a recurring concept); set back by anyone else it
    does not, and the episode goes on."""
    clock = Clock()
    core = MonitorCore(MonitoringSettings(), clock=clock)
    lineage = Lineage(featureset="loans", featureset_version=1, event_time_to=T0)
    for version in (1, 2):
        core.on_registry(
            RegistryEvent(
                event_id=f"reg-{version}", kind=RegistryEventKind.REGISTERED,
                model_name="loans", version=version, actor="t", at=T0, lineage=lineage,
            )
        )  # fmt: skip
    champion = RegistryEvent(
        event_id="c1", kind=RegistryEventKind.ALIAS_SET, model_name="loans", version=1,
        alias="champion", actor="t", at=T0,
    )  # fmt: skip
    core.on_registry(champion)
    errors = bernoulli_errors(seed=8, p_before=0.1, p_after=0.5, n_before=8_000, n_after=3_000)
    [(_, request)] = requests_of(feed_error_stream(core, clock, errors))
    restored = champion.model_copy(
        update={
            "event_id": "c2",
            "version": 2,
            "trigger": request.request_id if trigger == "request" else None,
            "reason": "recurring concept",
        }
    )
    core.on_registry(restored)
    assert (core.policy.episode("loans") is None) is closed
