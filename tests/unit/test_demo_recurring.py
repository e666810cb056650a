"""The demo's recurring concept: the old rule comes back at ``return_at`` and the demo counts
the loop closed only when the champion from before the drift is restored."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from river.datasets import synth

from driftline.cli.demo.milestones import DemoObserver
from driftline.contracts.messages import RegistryEvent, RegistryEventKind
from driftline.devtools.scenario import ScenarioConfig, applications
from driftline.registry_api.recurring import RESTORE_REASON

pytestmark = pytest.mark.unit


def test_the_old_rule_labels_the_applications_again_from_return_at() -> None:
    cfg = ScenarioConfig(events=3000, drift_at=1000, return_at=2000, label_delay=0, seed=5)
    apps = list(applications(cfg))
    assert [a.concept for a in apps[:1000]] == [2] * 1000
    assert [a.concept for a in apps[1000:2000]] == [0] * 1000
    assert [a.concept for a in apps[2000:]] == [2] * 1000
    assert [a.index for a in apps if a.after_drift] == list(range(1000, 2000))
    assert [a.index for a in apps if a.returned] == list(range(2000, 3000))
    # The old rule's applications go on where they left off: the same generator, labelled
    # by function 2 again.
    rule_2 = list(synth.Agrawal(classification_function=2, seed=5).take(2000))
    assert [(a.features, a.label) for a in apps[2000:]] == [(x, int(y)) for x, y in rule_2[1000:]]
    # Without a return the stream is what it always was.
    plain = ScenarioConfig(events=3000, drift_at=1000, label_delay=0, seed=5)
    assert [a.label for a in applications(plain)][:2000] == [a.label for a in apps[:2000]]


def test_a_return_before_the_drift_is_refused() -> None:
    with pytest.raises(ValueError, match="return_at must come after drift_at"):
        ScenarioConfig(events=100, drift_at=50, return_at=50)


def _alias(version: int, reason: str, trigger: str) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"a{version}-{trigger}", kind=RegistryEventKind.ALIAS_SET, model_name="loans",
        version=version, alias="champion", actor="driftline-training", reason=reason,
        trigger=trigger or None, at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


def _observer(restored: int) -> DemoObserver:
    obs = DemoObserver(ScenarioConfig(events=300, drift_at=100, return_at=200), "loans")
    ticks = itertools.count(1.0)
    obs.now = lambda: next(ticks)  # type: ignore[method-assign]
    obs.on_models(_alias(1, "no champion yet", "schedule:1"), history=True)
    obs.drift_sent_s = obs.now()
    obs.on_models(_alias(2, "accuracy 0.97 vs champion 0.61", "rr-1"), history=False)
    obs.return_sent_s = obs.now()
    obs.on_models(_alias(restored, f"{RESTORE_REASON}: v1 accuracy 0.98 …", "rr-2"), False)
    return obs


def test_the_demo_sees_the_old_champion_restored_after_the_return() -> None:
    obs = _observer(restored=1)
    assert obs.restored is not None and obs.restored[0] == 1 and obs.restored[2] == "rr-2"
    assert [m.name for m in obs.milestones][-1] == "old champion restored"
    assert not [p for p in obs.problems() if "restored" in p]
    summary = obs.summary()
    assert summary["old champion restored"] == "v1"
    assert summary["concept returns at event"] == 200
    assert obs.new_champion is not None and obs.new_champion[0] == 2  # the drift's answer


def test_restoring_a_version_from_after_the_drift_does_not_close_the_loop() -> None:
    obs = _observer(restored=2)
    assert "v2 was restored, not a champion from before the drift (v1)" in obs.problems()
    no_return = DemoObserver(ScenarioConfig(events=300, drift_at=100), "loans")
    assert "old champion restored" not in no_return.summary()
