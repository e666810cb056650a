"""Driftline training: joins the feature log with delayed labels, learns online (River) or
refits batch models (scikit-learn API: scikit-learn, LightGBM, XGBoost) on the replayed
window, registers candidate versions on a schedule and on retrain requests.

The core (:mod:`driftline.training.core`, :mod:`~driftline.training.label_join`,
:mod:`~driftline.training.learner`, :mod:`~driftline.training.batch`,
:mod:`~driftline.training.retrain`) touches no sockets;
:mod:`~driftline.training.kafka_loop`, :mod:`~driftline.training.replay` and
:mod:`~driftline.training.registry_sink` are the transports.
"""

from driftline.training.candidates import CandidateSink, InMemorySink, RegisteredVersion
from driftline.training.core import CandidateOutcome, CoreConfig, TrainingCore
from driftline.training.label_join import JoinedExample, JoinStats, LabelJoin, Position

__all__ = [
    "CandidateOutcome",
    "CandidateSink",
    "CoreConfig",
    "InMemorySink",
    "JoinStats",
    "JoinedExample",
    "LabelJoin",
    "Position",
    "RegisteredVersion",
    "TrainingCore",
]
