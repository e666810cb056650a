"""Driftline monitoring: online drift detection and the retraining trigger.

The core (:class:`~driftline.monitoring.core.MonitorCore`) holds no sockets;
:mod:`driftline.monitoring.kafka_loop` feeds it from Kafka and publishes what it
finds.  ``python -m driftline.monitoring.eval_drift`` measures the policy.
"""

from driftline.monitoring.core import MonitorCore, Outputs
from driftline.monitoring.distances import chi_square, js_divergence, ks_binned, psi
from driftline.monitoring.error_rise import ErrorRise, ErrorRiseConfig, ErrorRiseDetector
from driftline.monitoring.retrain_policy import RetrainPolicy, RetrainPolicyConfig

__all__ = [
    "ErrorRise",
    "ErrorRiseConfig",
    "ErrorRiseDetector",
    "MonitorCore",
    "Outputs",
    "RetrainPolicy",
    "RetrainPolicyConfig",
    "chi_square",
    "js_divergence",
    "ks_binned",
    "psi",
]
