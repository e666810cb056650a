"""Detectors of a rise in a model's live error rate, behind River's ``DriftDetector``.

The monitor feeds each model's error stream (1 wrong, 0 right per labelled
prediction) to the detector the setting ``monitoring.detector`` names, and
``driftline eval-drift`` measures the same detectors on synthetic streams.

* :mod:`.base`: the interface (River's) and the optional :class:`ExplainsDrift`;
* :mod:`.error_rise`: the default, :class:`ErrorRiseDetector`;
* :mod:`.catalog`: names to detectors, the extension point
  (:func:`register_detector`, entry-point group ``driftline.drift_detectors``);
* :mod:`.checks`: the conformance suite every detector passes.

A new detector is a River drift detector class (or a function returning one) and
a name: register it, select it with ``monitoring.detector: {type: <name>, ...}``,
and run :func:`driftline.drift_detectors.checks.run_checks` on it.
"""

from driftline.drift_detectors import catalog, error_rise
from driftline.drift_detectors.base import (
    DriftReport,
    ErrorDetector,
    ExplainsDrift,
    detections,
    drift_report,
    is_drift_detector,
)
from driftline.drift_detectors.catalog import *  # noqa: F403
from driftline.drift_detectors.error_rise import *  # noqa: F403

__all__ = [
    "DriftReport",
    "ErrorDetector",
    "ExplainsDrift",
    "detections",
    "drift_report",
    "is_drift_detector",
    *catalog.__all__,
    *error_rise.__all__,
]
