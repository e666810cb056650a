"""Typed async client of the Driftline model registry, and the promotion policy.

Serving, training and the CLI use :class:`RegistryClient`; training decides
promotions with :func:`decide_promotion` (:mod:`driftline.registry_client.promotion`,
a pure module).
"""

from driftline.registry_client.client import AliasChangeResult, RegistryClient
from driftline.registry_client.models import (
    ALIASES,
    AliasChange,
    ArtifactMetadata,
    ModelSummary,
    ModelVersionInfo,
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
    "RegistryClient",
    "decide_promotion",
]
