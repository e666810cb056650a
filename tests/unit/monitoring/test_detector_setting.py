"""``monitoring.detector`` chooses the error detector: the core and eval-drift build it by name.

A detector added from outside (a user's River detector registered with
``register_detector``) is selected by the setting alone and runs the production
path end to end: concept drift events named after it, a retraining request,
a fresh detector at each champion change, and eval-drift's table.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from river.drift import ADWIN
from support.custom_detector import WindowRateDetector
from support.error_streams import T0, Clock, feed_error_stream, requests_of

from driftline.contracts.messages import DriftKind, RegistryEvent, RegistryEventKind
from driftline.drift_detectors import ErrorRiseDetector, register_detector
from driftline.monitoring.core import MonitorCore
from driftline.monitoring.eval_drift import POLICY, EvalConfig, evaluate, main
from driftline.monitoring.synthetic_streams import bernoulli_errors
from driftline.settings import ConfigError, MonitoringSettings, load_settings

pytestmark = pytest.mark.unit

register_detector("test.window_rate", WindowRateDetector)


def _registry(kind: RegistryEventKind, version: int, alias: str | None = None) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"{kind.value}-{version}", kind=kind, model_name="loans", version=version,
        alias=alias, actor="t", at=T0,
    )  # fmt: skip


def test_a_registered_detector_chosen_by_the_setting_runs_the_monitor() -> None:
    settings = MonitoringSettings(detector={"type": "test.window_rate", "window": 100})
    clock = Clock()
    core = MonitorCore(settings, clock=clock)
    drift_at = 3_000
    errors = bernoulli_errors(seed=4, p_before=0.1, p_after=0.6, n_before=drift_at, n_after=1_000)
    seen = feed_error_stream(core, clock, errors)

    [(index, request)] = requests_of(seen)
    assert drift_at < index <= drift_at + 100
    [event] = [d for _, out in seen for d in out.drift]
    assert (event.kind, event.detector) == (DriftKind.CONCEPT, "test.window_rate")
    # A detector that reports nothing more: a plain alarm, dated at its detection.
    assert (event.statistic, event.threshold, event.window) == (1.0, 1.0, 1)
    assert event.severity == "warning"
    assert request.since_event_time == event.onset_event_time == T0 + timedelta(seconds=index)
    state = core.models["loans"]
    assert isinstance(state.error, WindowRateDetector) and state.error.window == 100
    assert state.statistic is None
    assert core.detections == {("loans", "concept", "test.window_rate"): 1}

    # A champion change builds a fresh detector of the same setting.
    for version in (1, 2):
        core.on_registry(_registry(RegistryEventKind.REGISTERED, version))
    core.on_registry(_registry(RegistryEventKind.ALIAS_SET, 1, "champion"))
    before = state.error
    core.on_registry(_registry(RegistryEventKind.ALIAS_SET, 2, "champion"))
    assert state.error is not before and isinstance(state.error, WindowRateDetector)
    assert state.error.window == 100 and not state.error.drift_detected


def test_the_default_is_the_error_rise_detector_with_its_parameters() -> None:
    core = MonitorCore(MonitoringSettings(detector={"warmup": 500, "min_shift": 0.1}))
    det = core.model("loans").error
    assert isinstance(det, ErrorRiseDetector)
    assert (det.warmup, det.min_shift, det.threshold) == (500, 0.1, 14.0)
    assert core.model("loans").statistic == 0.0


def test_a_config_file_and_the_environment_choose_rivers_detectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text("monitoring:\n  detector:\n    type: river.ADWIN\n    delta: 0.01\n")
    det = MonitorCore(load_settings(cfg).monitoring).model("loans").error
    assert isinstance(det, ADWIN) and det.delta == 0.01
    monkeypatch.setenv("DRIFTLINE_MONITORING__DETECTOR__DELTA", "0.05")
    det = MonitorCore(load_settings(cfg).monitoring).model("loans").error
    assert isinstance(det, ADWIN) and det.delta == 0.05


@pytest.mark.parametrize(
    ("detector", "message"),
    [
        ({"type": "river.adwin"}, "monitoring.detector: no drift detector is named 'river.adwin'"),
        (
            {"type": "river.ADWIN", "delt": 0.01},
            "monitoring.detector: detector 'river.ADWIN' has no parameter 'delt'; it takes: delta",
        ),
        (
            {"warmup": "soon"},
            "monitoring.detector: detector 'error_rise' parameter 'warmup': Input should be a "
            "valid integer",
        ),
    ],
)
def test_a_bad_detector_setting_stops_the_monitor_naming_it(
    detector: dict[str, object], message: str
) -> None:
    settings = MonitoringSettings(detector=detector)
    with pytest.raises(ConfigError) as err:
        MonitorCore(settings)
    assert message in str(err.value)


def test_settings_name_a_bad_type_and_the_moved_concept_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text("monitoring:\n  detector:\n    type: 'ADWIN; rm'\n")
    with pytest.raises(ConfigError, match=rf"{cfg}:3: monitoring\.detector\.type: String should"):
        load_settings(cfg)
    cfg.write_text("monitoring:\n  concept_warmup: 500\n")
    with pytest.raises(ConfigError, match=r"concept_warmup moved to monitoring\.detector\.warmup"):
        load_settings(cfg)


def test_eval_drift_measures_a_registered_detector_as_policy_and_alone() -> None:
    cfg = EvalConfig(
        seeds=1, processes=1, streams=("error-0.2-0.8",), bernoulli_before=3_000,
        bernoulli_after=1_000, detectors=(POLICY, "test.window_rate", "river.ADWIN"),
        policy_detector="test.window_rate", policy_params={"window": 100},
    )  # fmt: skip
    report = evaluate(cfg)
    assert report["config"]["policy"] == {
        "detector": "test.window_rate", "reference": 2000, "window": 100, "margin": 0.15,
        "cooldown_events": 600,
    }  # fmt: skip
    results = report["results"]["error-0.2-0.8"]
    for name in (POLICY, "test.window_rate", "river.ADWIN"):
        assert results[name]["misses"] == 0 and results[name]["false_alarms"] == 0, name
        assert results[name]["median_delay"] < 200, (name, results[name])


def test_eval_drift_refuses_a_bad_detector_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DRIFTLINE_CONFIG", raising=False)
    monkeypatch.setenv("DRIFTLINE_MONITORING__DETECTOR__TYPE", "nope")
    assert main(["--quick", "--processes", "1"]) == 2
    assert "monitoring.detector: no drift detector is named 'nope'" in capsys.readouterr().err
