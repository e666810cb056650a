"""eval_label_free: CBPE against delayed labels, data-only drift against the policy (tiny sizes).

The full sizes belong to ``driftline eval-drift`` and the bench; here one seed at the
quick sizes checks that the measurement measures what it says and its targets hold.
"""

from __future__ import annotations

from typing import Any

import pytest

from driftline.monitoring import eval_label_free as lf
from driftline.settings import MonitoringSettings

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return lf.run([1], config=lf.quick_config(lf.LabelFreeConfig()))


def test_every_target_is_met_at_test_sizes(report: dict[str, Any]) -> None:
    assert set(report["results"]) == set(lf.SCENARIOS)
    assert len(report["targets"]) == len(lf.TARGETS)
    missed = [t for t in report["targets"] if not t["met"]]
    assert not missed, lf.render(report)


def test_the_estimate_warns_before_the_labels_and_the_labels_confirm(
    report: dict[str, Any],
) -> None:
    for scenario in ("delayed-agrawal", "delayed-sea"):
        m = report["results"][scenario]
        # A real drop: the model got worse where the inputs went, and the estimate fell.
        assert m["accuracy_after"] < m["reference_accuracy"] - 0.1, scenario
        assert m["estimate_after"] < m["reference_accuracy"] - 0.05, scenario
        # Both signals fired; the labels could only after their delay.
        assert m["cbpe_misses"] == 0 and m["label_misses"] == 0, scenario
        delay = report["config"]["label_delay"]
        assert m["label_median_delay"] >= delay > m["cbpe_median_delay"], scenario
        assert m["median_lead"] > 0, scenario


def test_concept_drift_on_unmoved_inputs_is_invisible_to_the_estimate(
    report: dict[str, Any],
) -> None:
    m = report["results"]["concept-only-agrawal"]
    assert m["error_after"] > m["error_before"] + 0.2  # the concept really changed
    assert m["cbpe_misses"] == m["seeds"] and m["label_misses"] == 0
    assert m["estimate_after"] == pytest.approx(m["reference_accuracy"], abs=0.03)


def test_data_only_drift_is_reported_and_not_retrained_on(report: dict[str, Any]) -> None:
    for scenario in ("data-only-agrawal", "data-only-sea"):
        m = report["results"][scenario]
        assert m["data_misses"] == 0 and m["retrain_requests"] == 0, scenario
        assert m["error_after"] == pytest.approx(m["error_before"], abs=0.02), scenario
        assert m["cbpe_alarms"] == 0, scenario
    [run] = [r for r in report["runs"] if r["scenario"] == "data-only-sea"]
    moved = {feature for i, feature, _ in run["data_findings"] if i >= run["drift_at"]}
    assert moved == {"x2"}  # the feature the population moved in, and only it


def _run(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scenario": "delayed-sea", "seed": 1, "events": 20_000, "drift_at": 10_000,
        "label_delay": 5_000, "cbpe_window": 1_000, "reference_accuracy": 0.9,
        "cbpe_alarms": [], "label_requests": [], "data_findings": [], "estimates": [],
        "errors": {"before": 0.1, "after": 0.3},
    }  # fmt: skip
    return base | fields


def test_a_request_is_the_drifts_only_when_its_outcome_was_served_after_the_drift() -> None:
    # A request at 14,000 was completed by the outcome of event 9,000: a false alarm of
    # the label path before the drift, not its detection.
    m = lf._summarize("delayed-sea", [_run(cbpe_alarms=[10_500], label_requests=[14_000])])
    assert m["label_misses"] == 1 and m["cbpe_not_first"] == 0 and m["median_lead"] is None
    m = lf._summarize("delayed-sea", [_run(cbpe_alarms=[9_000, 15_200], label_requests=[15_100])])
    assert m["cbpe_false_alarms"] == 1 and m["cbpe_not_first"] == 1
    assert m["label_median_delay"] == 5_100 and m["cbpe_median_delay"] == 5_200


def test_unknown_scenarios_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'delayed-hyperplane'.*known: delayed-agrawal"):
        lf.run(1, scenarios=["delayed-hyperplane"])


def test_the_configuration_is_the_monitors() -> None:
    settings = MonitoringSettings(
        cbpe_reference=1234, cbpe_window=321, cbpe_margin=0.07, cooldown_s=90,
        drift_window=500, detector={"type": "error_rise", "warmup": 700},
    )  # fmt: skip
    cfg = lf.LabelFreeConfig.from_settings(settings, n_before=12_000)
    assert (cfg.cbpe.reference, cfg.cbpe.window, cfg.cbpe.margin) == (1234, 321, 0.07)
    assert (cfg.distribution.window, cfg.cooldown_events, cfg.n_before) == (500, 90, 12_000)
    assert (cfg.detector, dict(cfg.detector_params)) == ("error_rise", {"warmup": 700})


def test_a_drift_before_the_calibration_is_refused() -> None:
    cfg = lf.LabelFreeConfig(n_before=6_000)  # 2,000 reference labels, 5,000 events late
    with pytest.raises(ValueError, match="before the calibration is complete"):
        lf.run(1, config=cfg)
