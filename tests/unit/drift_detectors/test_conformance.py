"""Every error-rate detector passes the same conformance suite, built by name as the monitor
builds ``monitoring.detector``.

Cases: the built-in error-rise detector (defaults, and the short warm-up the
integration tests configure), River's detectors that pass it with their defaults
(ADWIN, HDDM_A, HDDM_W) or tuned (DDM), and two detectors added from outside
through the public extension points: a user's class registered with
:func:`register_detector`, and River's PageHinkley and the same user's class
named by an installed package's entry point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.custom_detector import WindowRateDetector

from driftline.drift_detectors import (
    ENTRY_POINT_GROUP,
    DetectorConfigError,
    detector_builder,
    detector_names,
    register_detector,
)
from driftline.drift_detectors.checks import CHECKS, DetectorCase, check_resets

pytestmark = pytest.mark.unit

register_detector("test.window_rate", WindowRateDetector)


@pytest.fixture(autouse=True)
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A package on ``sys.path`` whose metadata names two detectors in the entry-point group."""
    dist = tmp_path / "driftline_plugin_example-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: driftline-plugin-example\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "plugin.page_hinkley = river.drift:PageHinkley\n"
        "plugin.window_rate = support.custom_detector:WindowRateDetector\n"
        "plugin.broken = support.no_such_module:Nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield


CASES = [
    DetectorCase("error_rise"),
    DetectorCase("error_rise", {"warmup": 500}),
    DetectorCase("river.ADWIN"),
    DetectorCase("river.HDDMA"),
    DetectorCase("river.HDDMW"),
    DetectorCase("river.DDM", {"drift_threshold": 4.0}),
    DetectorCase("test.window_rate"),
    DetectorCase("plugin.page_hinkley", {"mode": "up"}),
    DetectorCase("plugin.window_rate", {"window": 300, "margin": 0.12}),
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_conformance(case: DetectorCase, check: Callable[[DetectorCase], None]) -> None:
    check(case)


def test_the_suite_catches_a_detector_that_breaks_the_contract() -> None:
    # River's defaults do not all hold up on an error stream: the suite says which and why.
    with pytest.raises(AssertionError, match="false alarms before the change"):
        CHECKS[1](DetectorCase("river.EDDM"))
    with pytest.raises(AssertionError, match="false alarm"):
        CHECKS[2](DetectorCase("plugin.page_hinkley"))  # mode "both" fires on any change
    # River's FHDDM._reset() leaves drift_detected set.
    with pytest.raises(AssertionError, match="still set after _reset"):
        check_resets(DetectorCase("river.FHDDM", {"confidence_level": 1e-4}))


def test_names_list_builtins_registered_and_installed_plugins() -> None:
    names = detector_names()
    assert names[:3] == ["error_rise", "river.ADWIN", "river.PageHinkley"]
    assert {"river.DDM", "river.HDDMA", "river.KSWIN"} <= set(names)
    assert "test.window_rate" in names  # registered in this process
    assert {"plugin.page_hinkley", "plugin.window_rate"} <= set(names)  # installed


def test_bad_names_and_parameters_are_named() -> None:
    with pytest.raises(DetectorConfigError, match=r"no drift detector is named 'river\.adwin'"):
        detector_builder("river.adwin")
    with pytest.raises(DetectorConfigError, match=r"'plugin\.broken' .* does not load"):
        detector_builder("plugin.broken")
    with pytest.raises(DetectorConfigError, match="has no parameter 'delt'; it takes: delta"):
        detector_builder("river.ADWIN", {"delt": 0.01})
    with pytest.raises(DetectorConfigError, match="parameter 'delta': Input should be a valid"):
        detector_builder("river.ADWIN", {"delta": "small"})
    with pytest.raises(DetectorConfigError, match="parameter 'warmup': Input should be greater"):
        detector_builder("error_rise", {"warmup": -1})
    register_detector("test.not_river", lambda: object())
    with pytest.raises(DetectorConfigError, match="built a object, not a River drift detector"):
        detector_builder("test.not_river")
    # Values given as text (environment variables) take the parameter's type.
    assert detector_builder("river.ADWIN", {"delta": "0.01"})().delta == 0.01
    assert detector_builder("plugin.window_rate", {"window": "50"})().window == 50
