"""In-memory :class:`FeatureSource` and :class:`ModelSource`: for unit tests and benchmarks.

They hold what the real services would answer, so the core can be exercised
without sockets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from driftline.contracts.errors import NotFoundError, UnavailableError
from driftline.serving.feature_source import MISSING, FeatureSource, OnlineValue
from driftline.serving.loaded_model import FeatureDatatype, LoadedModel
from driftline.serving.model_source import ModelSource

__all__ = ["InMemoryFeatureSource", "InMemoryModelSource"]


class InMemoryFeatureSource(FeatureSource):
    """Online values per ``(featureset, entity)``; an entity not stored reads as MISSING."""

    def __init__(self, types: Mapping[str, Mapping[str, FeatureDatatype]] | None = None) -> None:
        self.types = {k: dict(v) for k, v in (types or {}).items()}
        self.values: dict[tuple[str, str], dict[str, OnlineValue]] = {}
        self.reads: list[tuple[str, list[str], list[str]]] = []
        """Every read: (featureset, entity ids, feature names)."""
        self.down = False
        """When True, reads fail with UnavailableError (a feature store outage)."""

    def put(
        self, featureset: str, entity_id: str, values: Mapping[str, Any], age_ms: int = 0
    ) -> None:
        """Store PRESENT values of ``age_ms`` for an entity."""
        row = self.values.setdefault((featureset, entity_id), {})
        for name, value in values.items():
            row[name] = OnlineValue(value, "PRESENT", age_ms)

    def put_status(
        self, featureset: str, entity_id: str, name: str, status: str, age_ms: int
    ) -> None:
        """Store a MISSING or STALE read of one feature."""
        row = self.values.setdefault((featureset, entity_id), {})
        row[name] = OnlineValue(None, status, age_ms)  # type: ignore[arg-type]

    async def online(
        self,
        featureset: str,
        entity_ids: Sequence[str],
        feature_names: Sequence[str],
        timeout_s: float,
    ) -> list[dict[str, OnlineValue]]:
        if self.down:
            raise UnavailableError("feature store is down (in-memory outage)")
        if featureset not in self.types:
            raise NotFoundError(f"unknown feature set {featureset!r}")
        self.reads.append((featureset, list(entity_ids), list(feature_names)))
        out: list[dict[str, OnlineValue]] = []
        for entity in entity_ids:
            stored = self.values.get((featureset, entity), {})
            out.append({n: stored.get(n, MISSING) for n in feature_names})
        return out

    async def feature_types(self, featureset: str) -> dict[str, FeatureDatatype]:
        return dict(self.types.get(featureset, {}))


class InMemoryModelSource(ModelSource):
    """Loaded models by ``(name, version)`` and aliases by ``(name, alias)``."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, int], LoadedModel] = {}
        self.aliases: dict[str, dict[str, int]] = {}
        self.loads: list[tuple[str, int]] = []

    def add(self, model: LoadedModel, *aliases: str) -> None:
        """Register ``model`` and point ``aliases`` at it."""
        self.models[(model.name, model.version)] = model
        names = self.aliases.setdefault(model.name, {})
        for alias in aliases:
            names[alias] = model.version

    async def list_models(self) -> dict[str, dict[str, int]]:
        return {name: dict(a) for name, a in self.aliases.items()}

    async def load(
        self, name: str, *, alias: str | None = None, version: int | None = None
    ) -> LoadedModel:
        if version is None:
            version = self.aliases.get(name, {}).get(alias or "champion")
        model = self.models.get((name, version or -1))
        if model is None:
            raise NotFoundError(f"model {name!r} has no version {version}")
        self.loads.append((name, model.version))
        return model
