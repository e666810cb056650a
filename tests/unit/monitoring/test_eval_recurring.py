"""The recurring-concept evaluation on a small Agrawal 0 -> 2 -> 0 (no sockets).

The full sizes belong to the evaluation itself (``python -m
driftline.monitoring.eval_recurring``, the bench); here the story is short and the
detector warms up in 500 labels instead of 3,600 so that one seed runs in seconds.
"""

from __future__ import annotations

import pytest

from driftline.monitoring.eval_recurring import (
    FIRST,
    TARGETS,
    RecurringEvalConfig,
    check_targets,
    run,
    summarize,
)
from driftline.registry_api.recurring import RESTORE_REASON

pytestmark = pytest.mark.unit

QUICK = RecurringEvalConfig(
    before=1_500,
    recurrence_after=3_000,
    after=2_500,
    label_delay=50,
    detector_params={"warmup": 500},
)


def test_the_return_is_answered_by_restoring_the_concept_0_champion_sooner_than_a_retrain() -> None:
    report = run([1], QUICK)
    [seed] = report["per_seed"]
    assert seed["false_alarms"] == 0
    assert seed["return_detected"]
    assert seed["restored_version"] == FIRST and seed["right_version"]
    assert seed["restore_reason"].startswith(f"{RESTORE_REASON}: v{FIRST} accuracy")
    assert seed["episode_closed"]  # the policy counts the restoration as the answer
    # Back within 2 points of the pre-drift level, from the return ...
    assert seed["restored_accuracy"] >= seed["pre_drift_accuracy"] - QUICK.tolerance
    # ... once 200 labelled examples after the onset were there, long before a retrain's
    # 1,500 (which, trained on them, is still not as good as the old champion).
    assert seed["restore_events"] is not None and seed["retrain_events"] is not None
    assert seed["restore_events"] + 1_000 < seed["retrain_events"]
    assert seed["restore_events"] >= seed["return_detection_delay"]
    assert seed["retrain_accuracy"] < seed["restored_accuracy"]
    assert all(t["met"] for t in report["targets"]), report["targets"]


def test_a_seed_without_a_restoration_misses_the_targets() -> None:
    missed = {
        "return_detected": True, "right_version": False, "episode_closed": None,
        "sooner_than_retrain": False, "false_alarms": 0, "return_detection_delay": 130,
        "restore_events": None, "retrain_events": 1500, "retrain_back_events": None,
    }  # fmt: skip
    hit = missed | {"right_version": True, "sooner_than_retrain": True, "restore_events": 200}
    summary = summarize([hit, missed])
    assert summary["right_version_restored_ratio"] == 0.5
    assert summary["median_restore_events"] == 200
    met = {t["target"]: t["met"] for t in check_targets(summary)}
    assert len(met) == len(TARGETS)
    assert [k for k, ok in met.items() if not ok] == [
        "agrawal 0->2->0: right_version_restored_ratio >= 1",
        "agrawal 0->2->0: sooner_than_retrain_ratio >= 1",
    ]
