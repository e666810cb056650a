"""Driftline serving: online predictions over gRPC.

``driftline.v1.Predictor`` (online features merged with request-time ones) and
the Open Inference Protocol (``inference.GRPCInferenceService``) over one core
(:class:`~driftline.serving.core.ServingCore`); the champion is followed on
``driftline.models`` and hot-swapped; every answer is logged to
``driftline.predictions``.
"""

from driftline.serving.core import PredictCall, PredictOutcome, ServingCore
from driftline.serving.feature_source import FeatureSource, OnlineValue
from driftline.serving.feature_transport import GrpcFeatureSource
from driftline.serving.loaded_model import LoadedModel, ModelFeature
from driftline.serving.model_source import ModelSource, RegistryModelSource
from driftline.serving.model_table import ModelTable
from driftline.serving.prediction_log import PredictionLog

__all__ = [
    "FeatureSource",
    "GrpcFeatureSource",
    "LoadedModel",
    "ModelFeature",
    "ModelSource",
    "ModelTable",
    "OnlineValue",
    "PredictCall",
    "PredictOutcome",
    "PredictionLog",
    "RegistryModelSource",
    "ServingCore",
]
