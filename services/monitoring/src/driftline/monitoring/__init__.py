"""Driftline monitoring: online drift detection and the retraining trigger.

The core (:class:`~driftline.monitoring.core.MonitorCore`) holds no sockets;
:mod:`driftline.monitoring.kafka_loop` feeds it from Kafka and publishes what it
finds.  The error detectors live in :mod:`driftline.drift_detectors` (chosen by
``monitoring.detector``); ``python -m driftline.monitoring.eval_drift`` measures
them and the policy.
"""

from driftline.monitoring.core import MonitorCore, Outputs
from driftline.monitoring.distances import chi_square, js_divergence, ks_binned, psi
from driftline.monitoring.retrain_policy import RetrainPolicy, RetrainPolicyConfig

__all__ = [
    "MonitorCore",
    "Outputs",
    "RetrainPolicy",
    "RetrainPolicyConfig",
    "chi_square",
    "js_divergence",
    "ks_binned",
    "psi",
]
