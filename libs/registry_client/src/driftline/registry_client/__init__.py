"""Typed async client of the Driftline model registry, and the Python registration API.

Training and the CLI use :class:`RegistryClient`.  The types it returns and the
promotion policy belong to the registry's contract, :mod:`driftline.registry_api`; they
are re-exported here so that ``from driftline.registry_client import ModelVersionInfo``
keeps working.  A model trained elsewhere (a fitted scikit-learn, LightGBM or
XGBoost estimator, an ONNX graph, a custom class's artifact) is registered with
:func:`register_model` (:mod:`driftline.registry_client.external`).
"""

from driftline.registry_api.models import (
    ALIASES,
    AliasChange,
    ArtifactMetadata,
    ModelSummary,
    ModelVersionInfo,
    UnservedRetrain,
)
from driftline.registry_api.promotion import Decision, PromotionPolicy, decide_promotion
from driftline.registry_client.client import AliasChangeResult, RegistryClient
from driftline.registry_client.external import (
    Registered,
    TrainedOn,
    register_model,
    register_model_sync,
)

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
