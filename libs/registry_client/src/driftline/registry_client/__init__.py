"""Typed async client of the Driftline model registry, and the promotion policy.

Serving, training and the CLI use :class:`RegistryClient`; training decides
promotions with :func:`decide_promotion` (:mod:`driftline.registry_client.promotion`,
a pure module).  A model trained elsewhere (a fitted scikit-learn, LightGBM or
XGBoost estimator, an ONNX graph, a custom class's artifact) is registered with
:func:`register_model` (:mod:`driftline.registry_client.external`).
"""

from driftline.registry_client.client import AliasChangeResult, RegistryClient
from driftline.registry_client.external import (
    Registered,
    TrainedOn,
    register_model,
    register_model_sync,
)
from driftline.registry_client.models import (
    ALIASES,
    AliasChange,
    ArtifactMetadata,
    ModelSummary,
    ModelVersionInfo,
    UnservedRetrain,
)
from driftline.registry_client.promotion import Decision, PromotionPolicy, decide_promotion

__all__ = [
    "ALIASES",
    "AliasChange",
    "AliasChangeResult",
    "ArtifactMetadata",
    "Decision",
    "ModelSummary",
    "ModelVersionInfo",
    "PromotionPolicy",
    "Registered",
    "RegistryClient",
    "TrainedOn",
    "UnservedRetrain",
    "decide_promotion",
    "register_model",
    "register_model_sync",
]
