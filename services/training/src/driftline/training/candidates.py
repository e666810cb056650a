"""Where candidate versions go: the registry, behind a small interface.

Two implementations: :class:`driftline.training.registry_sink.RegistrySink`
(the real registry over gRPC) and :class:`InMemorySink` (unit tests and
benchmarks, no sockets).  Both honour the same contract: registering twice with
the same idempotency key returns the first version instead of a new one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from driftline.contracts.messages import Lineage
from driftline.model_runtimes import ModelRuntime, runtime_for
from driftline.training.recurring import ChampionChange


@dataclass(frozen=True)
class RegisteredVersion:
    """A version as the training service needs to know it."""

    name: str
    version: int
    metrics: dict[str, float]
    lineage: Lineage | None
    aliases: tuple[str, ...] = ()
    framework: str = "river"
    """The framework whose runtime serves it (what the registry recorded)."""


@dataclass(frozen=True)
class NewVersion:
    """What a candidate is registered with, besides its model."""

    metrics: Mapping[str, float]
    lineage: Lineage
    spec: Mapping[str, Any]
    """The model spec plus ``"reference"``, the statistics of what it trained on."""
    idempotency_key: str
    actor: str
    drift_ids: tuple[str, ...] = ()
    framework: str = "river"
    library_versions: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Champion:
    """The current champion: its version and the (verified, deserialized) model.

    ``runtime`` is set when the champion was loaded through its framework's runtime
    (any framework other than a River champion of a River model): candidates are
    then compared with it through :meth:`ModelRuntime.predict`.
    """

    version: RegisteredVersion
    model: Any
    runtime: ModelRuntime | None = None


@dataclass(frozen=True)
class VerifiedArtifact:
    """A version's artifact bytes, their signature checked, and what the registry recorded."""

    framework: str
    artifact_format: str
    data: bytes
    spec: dict[str, Any]


class CandidateSink(Protocol):
    """What training needs from a model registry."""

    async def register(self, name: str, model: Any, new: NewVersion) -> RegisteredVersion:
        """Register ``model`` (serialised by ``new.framework``'s runtime, in its first
        format); the same ``new.idempotency_key`` returns the first version."""
        ...

    async def champion_version(self, name: str) -> RegisteredVersion | None:
        """The version the ``champion`` alias of ``name`` points at, or None."""
        ...

    async def load_model(self, name: str, version: int) -> Any:
        """The verified, deserialized model of a version (``river-pickle`` only)."""
        ...

    async def load_artifact(self, name: str, version: int) -> VerifiedArtifact:
        """A version's artifact, its digest and signature verified, with its recorded spec
        (for :func:`driftline.model_runtimes.load_runtime`, whatever its framework)."""
        ...

    async def set_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str, trigger_id: str
    ) -> None:
        """Point ``alias`` at ``version``."""
        ...

    async def find_by_trigger(self, name: str, trigger_id: str) -> RegisteredVersion | None:
        """The version of ``name`` whose lineage names ``trigger_id``, if one exists."""
        ...

    async def get_version(self, name: str, version: int) -> RegisteredVersion:
        """One version of ``name`` (its framework, lineage and metrics)."""
        ...

    async def champion_changes(self, name: str) -> list[ChampionChange]:
        """Every move of ``name``'s ``champion`` alias, oldest first (the alias history)."""
        ...

    async def record_unserved_retrain(
        self, name: str, request_id: str, *, reason: str, actor: str, drift_ids: Sequence[str]
    ) -> int:
        """Record on model ``name`` that retrain request ``request_id`` cannot be served
        (idempotent by request id); returns how many unserved requests it now has."""
        ...


@dataclass
class _Stored:
    version: RegisteredVersion
    model: Any
    key: str
    spec: dict[str, Any] = field(default_factory=dict)
    """The spec the version was registered with (``spec["reference"]`` included)."""
    library_versions: dict[str, str] = field(default_factory=dict)


@dataclass
class InMemorySink:
    """A registry in a dict, for tests and benchmarks (models are deep-copied on the way in)."""

    versions: dict[str, list[_Stored]] = field(default_factory=dict)
    aliases: dict[str, dict[str, int]] = field(default_factory=dict)
    alias_log: list[tuple[str, str, int, str]] = field(default_factory=list)
    """Every alias move: (model, alias, version, reason)."""
    alias_triggers: list[str] = field(default_factory=list)
    """The trigger id of each move in :attr:`alias_log`."""
    unserved: dict[str, dict[str, str]] = field(default_factory=dict)
    """Unserved retrain requests per model: request id -> reason."""

    async def register(self, name: str, model: Any, new: NewVersion) -> RegisteredVersion:
        stored = self.versions.setdefault(name, [])
        for s in stored:
            if s.key == new.idempotency_key:
                return s.version
        v = RegisteredVersion(
            name, len(stored) + 1, dict(new.metrics), new.lineage, framework=new.framework
        )
        stored.append(
            _Stored(
                v,
                copy.deepcopy(model),
                new.idempotency_key,
                dict(new.spec),
                dict(new.library_versions or {}),
            )
        )
        return v

    async def champion_version(self, name: str) -> RegisteredVersion | None:
        number = self.aliases.get(name, {}).get("champion")
        return None if number is None else self.versions[name][number - 1].version

    async def load_model(self, name: str, version: int) -> Any:
        return copy.deepcopy(self.versions[name][version - 1].model)

    async def load_artifact(self, name: str, version: int) -> VerifiedArtifact:
        stored = self.versions[name][version - 1]
        runtime = runtime_for(stored.version.framework)
        return VerifiedArtifact(
            stored.version.framework, runtime.formats[0], runtime.dump(stored.model), stored.spec
        )

    async def set_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str, trigger_id: str
    ) -> None:
        self.aliases.setdefault(name, {})[alias] = version
        self.alias_log.append((name, alias, version, reason))
        self.alias_triggers.append(trigger_id)

    async def get_version(self, name: str, version: int) -> RegisteredVersion:
        return self.versions[name][version - 1].version

    async def champion_changes(self, name: str) -> list[ChampionChange]:
        return [
            ChampionChange(v, reason, trigger)
            for (model, alias, v, reason), trigger in zip(
                self.alias_log, self.alias_triggers, strict=True
            )
            if model == name and alias == "champion"
        ]

    async def find_by_trigger(self, name: str, trigger_id: str) -> RegisteredVersion | None:
        for s in self.versions.get(name, []):
            if s.version.lineage is not None and s.version.lineage.trigger_id == trigger_id:
                return s.version
        return None

    async def record_unserved_retrain(
        self, name: str, request_id: str, *, reason: str, actor: str, drift_ids: Sequence[str]
    ) -> int:
        recorded = self.unserved.setdefault(name, {})
        recorded.setdefault(request_id, reason)
        return len(recorded)
