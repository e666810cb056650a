"""What the registry hands back, as typed pydantic models (the pb2 types stay at the edge)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftline.contracts.messages import Lineage

__all__ = [
    "ALIASES",
    "SKLEARN_INPUT_TAG",
    "AliasChange",
    "AliasChangeKind",
    "ArtifactMetadata",
    "ModelSummary",
    "ModelVersionInfo",
    "ParamValue",
    "UnservedRetrain",
    "VersionStatus",
    "WriterClaim",
    "WriterLease",
]

ALIASES: tuple[str, ...] = ("champion", "challenger", "shadow")
"""The alias names the registry accepts."""

SKLEARN_INPUT_TAG = "driftline.input"
"""Version tag saying how a scikit-learn estimator takes its features: ``dataframe`` (it was
fitted on a DataFrame and selects its columns by name, so string features reach it as they
are) or ``array`` (a float matrix in the spec's feature order).  The registry cannot look
inside a pickle, so ``driftline models register`` and :func:`register_model` record what
they saw when they loaded the estimator; without ``dataframe`` the registry refuses a
scikit-learn version that reads a string feature."""

VersionStatus = Literal["registered", "rejected", "archived"]
AliasChangeKind = Literal["set", "rolled_back", "deleted"]
ParamValue = float | int | str | bool | None


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelVersionInfo(_Frozen):
    """One immutable model version and the aliases pointing at it now."""

    name: str
    version: int
    sha256: str
    signature: str
    signature_key_id: str = ""
    created_at: datetime
    created_by: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage | None = None
    drift_ids: list[str] = Field(default_factory=list)
    """Drift detections behind the retrain request that produced it."""
    aliases: list[str] = Field(default_factory=list)
    status: VersionStatus = "registered"
    params: dict[str, ParamValue] = Field(default_factory=dict)
    spec: dict[str, Any] = Field(default_factory=dict)
    artifact_format: str = ""
    size_bytes: int = 0
    tags: dict[str, str] = Field(default_factory=dict)
    framework: str = "river"
    """The framework whose runtime serves it (river for versions recorded before frameworks)."""
    library_versions: dict[str, str] = Field(default_factory=dict)
    """Versions of the libraries that wrote the artifact."""

    @property
    def trigger_id(self) -> str | None:
        """The retrain request / schedule tick that produced this version, if any."""
        return self.lineage.trigger_id if self.lineage else None


class ArtifactMetadata(_Frozen):
    """What precedes an artifact download; verify ``sha256``/``signature`` before use."""

    model_version: ModelVersionInfo
    size_bytes: int
    sha256: str
    signature: str
    signature_algorithm: str
    signature_key_id: str
    artifact_format: str


class AliasChange(_Frozen):
    """One move of an alias, as recorded on the ``driftline.models`` log."""

    event_id: str
    name: str
    alias: str
    kind: AliasChangeKind
    version: int | None
    """``None`` when the alias was deleted."""
    previous_version: int | None
    actor: str
    reason: str = ""
    trigger_id: str = ""
    changed_at: datetime


class UnservedRetrain(_Frozen):
    """A retrain request Driftline could not serve for a model (it has no trainer for it)."""

    request_id: str
    reason: str = ""
    at: datetime
    """When the registry recorded it (the event's time on the log)."""
    drift_ids: list[str] = Field(default_factory=list)


class ModelSummary(_Frozen):
    """A registered model: its latest version number, aliases, framework and the retrain
    requests it has not been served since its latest version."""

    name: str
    latest_version: int
    aliases: dict[str, int] = Field(default_factory=dict)
    framework: str = "river"
    """The latest version's framework."""
    unserved_retrains: list[UnservedRetrain] = Field(default_factory=list)
    """Oldest first; cleared when a newer version is registered."""


class WriterLease(_Frozen):
    """The one-writer role a mutation is made under: refused once a later claim of ``role``
    is on the log (see :class:`WriterClaim`)."""

    role: str
    epoch: int


class WriterClaim(_Frozen):
    """The current claim of a one-writer role (e.g. ``training``), as the log decided it."""

    role: str
    epoch: int
    """1 for the role's first claim, one more for each later one."""
    holder: str
    previous_holder: str = ""
    claimed_at: datetime | None = None

    @property
    def lease(self) -> WriterLease:
        """What a mutation made under this claim carries."""
        return WriterLease(role=self.role, epoch=self.epoch)
