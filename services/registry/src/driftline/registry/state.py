"""The registry's state as a pure function of the ``driftline.models`` log.

:meth:`RegistryState.apply` is deterministic: replaying the same events in the
same order rebuilds the same state, on any replica, after any restart.  An
event that conflicts with the state at its position in the log (a version
number already taken, a dedup key already used, a compare-and-set whose
expected value no longer holds) is *ignored* — the log keeps it for the audit
trail, the state does not change, and the writer that produced it sees the
outcome and retries or reports the conflict.  That is how several replicas
write to one log without a distributed lock.

Encodings on top of :class:`RegistryEvent` (kept here, in one place):

* ``alias_set`` with ``version == 0`` deletes the alias (versions start at 1); a
  ``rolled_back`` always names a version.
* ``previous_version`` of an alias event is the value the writer saw; the event
  only applies while the alias still has that value.
* version attributes the event model has no field for (params, tags, artifact
  format, framework, library versions, drift ids, signing key id, idempotency key)
  travel in ``spec["_registry"]`` and are removed from the spec the user sees.
* ``retrain_unserved`` carries the retrain request id in ``trigger``, why in
  ``reason``, the model's latest version when it was written in ``version`` and the
  request's drift ids in ``spec["_registry"]["drift_ids"]``.  It is kept on the model
  until a newer version is registered; one written before a version that the log
  registered ahead of it is stale and ignored.  A request id is recorded once per model.
* ``writer_claimed`` claims a one-writer role (``trigger`` is the role, ``actor`` the
  holder; no model): the role's epoch becomes one more than before.  An event of any
  kind made under a writer role carries ``spec["_registry"]["writer"] = {"role", "epoch"}``
  and is ignored ("fenced: …") unless that epoch is the role's current one — so once a
  standby trainer's claim is on the log, nothing the trainer it replaced writes applies,
  on any replica, whatever the order in which the two reached the registry.
* any other kind (one a newer registry writes) is ignored, not an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from driftline.contracts.messages import RegistryEvent, RegistryEventKind
from driftline.registry_api.models import (
    ALIASES,
    AliasChange,
    AliasChangeKind,
    ModelSummary,
    ModelVersionInfo,
    UnservedRetrain,
    WriterClaim,
    WriterLease,
)

__all__ = [
    "DELETED_VERSION",
    "EXTRAS_KEY",
    "MODEL_NAME",
    "ApplyOutcome",
    "ModelState",
    "RegistryState",
    "dedup_key_of",
    "split_spec",
    "unserved_of",
    "writer_of",
]

EXTRAS_KEY = "_registry"
"""Key in ``RegistryEvent.spec`` holding registry-only version attributes."""

DELETED_VERSION = 0
"""``alias_set`` to this version removes the alias."""

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""A valid model name: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit."""


@dataclass(frozen=True)
class ApplyOutcome:
    """What applying one event did: ``applied`` or ignored with a reason a person can read.

    An ignored event either lost a race to another writer (a conflict or a duplicate:
    normal when replicas write at once) or could not have been written by any registry
    (it names a model or version the log never registered, or is malformed); only the
    latter has a :attr:`skip_reason`.
    """

    event_id: str
    applied: bool
    reason: str = ""
    skip_reason: str | None = None
    """``unknown_model``, ``unknown_version`` or ``invalid`` for an event no registry
    writes; ``None`` when it applied or lost a race."""


@dataclass
class ModelState:
    """One model: its versions (index = version - 1), aliases and alias history."""

    name: str
    versions: list[ModelVersionInfo] = field(default_factory=list)
    aliases: dict[str, int] = field(default_factory=dict)
    history: list[AliasChange] = field(default_factory=list)
    dedup: dict[str, int] = field(default_factory=dict)
    """Idempotency key (or trigger id) -> the version it created."""
    unserved: list[UnservedRetrain] = field(default_factory=list)
    """Retrain requests not served since the latest version, oldest first."""
    unserved_seen: set[str] = field(default_factory=set)
    """Every retrain request id ever recorded as unserved (recording is once per id)."""

    @property
    def latest(self) -> int:
        """The highest version number (0 when none)."""
        return len(self.versions)

    @property
    def framework(self) -> str:
        """The latest version's framework (``river`` before any version)."""
        return self.versions[-1].framework if self.versions else "river"

    def version(self, number: int) -> ModelVersionInfo | None:
        """Version ``number`` with its current aliases, or ``None``."""
        if not 1 <= number <= len(self.versions):
            return None
        v = self.versions[number - 1]
        aliases = sorted(a for a, n in self.aliases.items() if n == number)
        return v.model_copy(update={"aliases": aliases}) if aliases else v


def _unknown_version(event: RegistryEvent) -> ApplyOutcome:
    return ApplyOutcome(
        event.event_id,
        False,
        f"unknown version {event.version} of {event.model_name!r}",
        "unknown_version",
    )


def split_spec(spec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(user_spec, extras)`` of an event's spec."""
    user = {k: v for k, v in spec.items() if k != EXTRAS_KEY}
    extras = spec.get(EXTRAS_KEY)
    return user, dict(extras) if isinstance(extras, Mapping) else {}


def unserved_of(event: RegistryEvent) -> UnservedRetrain:
    """The unserved retrain request a ``retrain_unserved`` event records."""
    _, extras = split_spec(event.spec)
    drift_ids = extras.get("drift_ids", [])
    return UnservedRetrain(
        request_id=event.trigger or "",
        reason=event.reason,
        at=event.at,
        drift_ids=[str(d) for d in drift_ids] if isinstance(drift_ids, list) else [],
    )


def writer_of(event: RegistryEvent) -> WriterLease | None:
    """The writer role an event was made under, if any (``None`` also when malformed)."""
    extras = event.spec.get(EXTRAS_KEY)
    writer = extras.get("writer") if isinstance(extras, dict) else None
    if not isinstance(writer, dict):
        return None
    role, epoch = writer.get("role"), writer.get("epoch")
    if not isinstance(role, str) or not isinstance(epoch, int) or isinstance(epoch, bool):
        return None
    return WriterLease(role=role, epoch=epoch)


def dedup_key_of(event: RegistryEvent) -> str | None:
    """The key that makes a registration idempotent: idempotency key, else trigger id."""
    _, extras = split_spec(event.spec)
    key = extras.get("idempotency_key") or event.trigger
    return str(key) if key else None


class RegistryState:
    """Every model's versions and aliases, built only by :meth:`apply`."""

    def __init__(self) -> None:
        self.models: dict[str, ModelState] = {}
        self.applied_events: set[str] = set()
        self.events_seen = 0
        self.alias_changes = 0
        self.writers: dict[str, WriterClaim] = {}
        """Each one-writer role's current claim."""
        self.fenced_events = 0
        """Events ignored because they were made under an older claim of their role."""

    # -- the state machine ---------------------------------------------------------

    def apply(self, event: RegistryEvent) -> ApplyOutcome:
        """Apply one event of the log; ignores (and says why) one that conflicts."""
        self.events_seen += 1
        if event.event_id in self.applied_events:
            return ApplyOutcome(event.event_id, False, "event already applied")
        outcome = self._dispatch(event)
        if outcome.applied:
            self.applied_events.add(event.event_id)
        return outcome

    def _dispatch(self, event: RegistryEvent) -> ApplyOutcome:
        if event.kind is RegistryEventKind.WRITER_CLAIMED:
            return self._claim(event)
        fenced = self.fenced(writer_of(event))
        if fenced is not None:
            self.fenced_events += 1
            return ApplyOutcome(event.event_id, False, fenced)
        if event.kind is RegistryEventKind.REGISTERED:
            return self._register(event)
        on_model = {
            RegistryEventKind.ALIAS_SET: self._move_alias,
            RegistryEventKind.ROLLED_BACK: self._move_alias,
            RegistryEventKind.REJECTED: self._reject,
            RegistryEventKind.RETRAIN_UNSERVED: self._unserved,
        }.get(event.kind)
        if on_model is None:  # a kind a newer registry writes: its readers here have nothing to do
            return ApplyOutcome(event.event_id, False, f"kind {event.kind} is not applied")
        # The other kinds change a registered model: a writer checks its state (a prefix
        # of this log) before it writes, so an event naming no model comes from no registry.
        model = self.models.get(event.model_name)
        if model is None:
            return ApplyOutcome(
                event.event_id, False, f"unknown model {event.model_name!r}", "unknown_model"
            )
        return on_model(event, model)

    def fenced(self, lease: WriterLease | None) -> str | None:
        """Why a mutation made under ``lease`` is refused now; ``None`` when it may apply."""
        if lease is None:
            return None
        claim = self.writers.get(lease.role)
        if claim is not None and claim.epoch == lease.epoch:
            return None
        if claim is None or lease.epoch > claim.epoch:
            return (
                f"fenced: no claim {lease.epoch} of writer role {lease.role!r} is on the log "
                f"(its epoch is {claim.epoch if claim else 0}); claim the role first"
            )
        return (
            f"fenced: writer role {lease.role!r} was claimed by {claim.holder!r} "
            f"(epoch {claim.epoch}) after this writer's epoch {lease.epoch}; "
            "this writer no longer holds the role"
        )

    def _claim(self, event: RegistryEvent) -> ApplyOutcome:
        role, holder = event.trigger or "", event.actor
        if not role or not holder:
            return ApplyOutcome(
                event.event_id, False, "invalid: writer claim without role or holder", "invalid"
            )
        before = self.writers.get(role)
        self.writers[role] = WriterClaim(
            role=role,
            epoch=(before.epoch if before else 0) + 1,
            holder=holder,
            previous_holder=before.holder if before else "",
            claimed_at=event.at,
        )
        return ApplyOutcome(event.event_id, True)

    def _register(self, event: RegistryEvent) -> ApplyOutcome:
        if not MODEL_NAME.match(event.model_name):
            return ApplyOutcome(
                event.event_id,
                False,
                f"invalid: model name {event.model_name[:200]!r} is not a valid name",
                "invalid",
            )
        model = self.models.get(event.model_name) or ModelState(event.model_name)
        key = dedup_key_of(event)
        if key is not None and key in model.dedup:
            return ApplyOutcome(
                event.event_id,
                False,
                f"duplicate: key {key!r} already created version {model.dedup[key]}",
            )
        if not 1 <= event.version <= model.latest + 1:
            # A writer numbers from a state that is a prefix of this log: never past the next.
            return ApplyOutcome(
                event.event_id,
                False,
                f"invalid: version {event.version} of {event.model_name!r} cannot be "
                f"registered (the next number is {model.latest + 1})",
                "invalid",
            )
        if event.version != model.latest + 1:
            return ApplyOutcome(
                event.event_id,
                False,
                f"conflict: version {event.version} of {event.model_name!r} is not the next "
                f"number ({model.latest + 1})",
            )
        if not event.sha256 or not event.signature:
            return ApplyOutcome(
                event.event_id, False, "invalid: registration without artifact", "invalid"
            )
        spec, extras = split_spec(event.spec)
        info = ModelVersionInfo(
            name=event.model_name,
            version=event.version,
            sha256=event.sha256,
            signature=event.signature,
            signature_key_id=str(extras.get("signature_key_id", "")),
            created_at=event.at,
            created_by=event.actor,
            metrics=dict(event.metrics),
            lineage=event.lineage,
            drift_ids=[str(d) for d in extras.get("drift_ids", [])],
            params=dict(extras.get("params", {})),
            spec=spec,
            artifact_format=str(extras.get("artifact_format", "")),
            size_bytes=event.size_bytes or 0,
            tags={str(k): str(v) for k, v in dict(extras.get("tags", {})).items()},
            framework=str(extras.get("framework") or "river"),
            library_versions={
                str(k): str(v) for k, v in dict(extras.get("library_versions", {})).items()
            },
        )
        model.versions.append(info)
        # A newer version answers the retrain requests that could not be served.
        model.unserved.clear()
        if key is not None:
            model.dedup[key] = event.version
        self.models[event.model_name] = model
        return ApplyOutcome(event.event_id, True)

    def _move_alias(self, event: RegistryEvent, model: ModelState) -> ApplyOutcome:
        # A writer checks the alias and version in its state (a prefix of this log)
        # before it writes: an event failing these checks comes from no registry.
        alias = event.alias or ""
        if alias not in ALIASES:
            return ApplyOutcome(event.event_id, False, f"invalid alias {alias!r}", "invalid")
        deleting = event.kind is RegistryEventKind.ALIAS_SET and event.version == DELETED_VERSION
        if not deleting and model.version(event.version) is None:
            return _unknown_version(event)
        current = model.aliases.get(alias)
        if current != event.previous_version:
            return ApplyOutcome(
                event.event_id,
                False,
                f"conflict: {alias} points at {current}, the change expected "
                f"{event.previous_version}",
            )
        if deleting and current is None:
            return ApplyOutcome(event.event_id, False, f"alias {alias!r} is not set")
        kind: AliasChangeKind
        if deleting:
            kind = "deleted"
            del model.aliases[alias]
        else:
            kind = "rolled_back" if event.kind is RegistryEventKind.ROLLED_BACK else "set"
            model.aliases[alias] = event.version
        model.history.append(
            AliasChange(
                event_id=event.event_id,
                name=model.name,
                alias=alias,
                kind=kind,
                version=None if deleting else event.version,
                previous_version=current,
                actor=event.actor,
                reason=event.reason,
                trigger_id=event.trigger or "",
                changed_at=event.at,
            )
        )
        self.alias_changes += 1
        return ApplyOutcome(event.event_id, True)

    def _reject(self, event: RegistryEvent, model: ModelState) -> ApplyOutcome:
        if model.version(event.version) is None:
            return _unknown_version(event)
        idx = event.version - 1
        model.versions[idx] = model.versions[idx].model_copy(update={"status": "rejected"})
        return ApplyOutcome(event.event_id, True)

    def _unserved(self, event: RegistryEvent, model: ModelState) -> ApplyOutcome:
        if not event.trigger:
            return ApplyOutcome(
                event.event_id, False, "invalid: retrain_unserved without a request id", "invalid"
            )
        if event.version > model.latest:
            return _unknown_version(event)
        if event.trigger in model.unserved_seen:
            return ApplyOutcome(
                event.event_id, False, f"duplicate: request {event.trigger!r} already recorded"
            )
        if event.version < model.latest:
            # Written while v{event.version} was the latest; the newer version registered
            # ahead of it on the log is what the request asked for.
            return ApplyOutcome(
                event.event_id,
                False,
                f"stale: v{model.latest} was registered after v{event.version}, "
                f"for which request {event.trigger!r} was recorded",
            )
        model.unserved_seen.add(event.trigger)
        model.unserved.append(unserved_of(event))
        return ApplyOutcome(event.event_id, True)

    # -- queries -------------------------------------------------------------------

    def summaries(self) -> list[ModelSummary]:
        """Every model, sorted by name."""
        return [
            ModelSummary(
                name=m.name,
                latest_version=m.latest,
                aliases=dict(m.aliases),
                framework=m.framework,
                unserved_retrains=list(m.unserved),
            )
            for m in sorted(self.models.values(), key=lambda m: m.name)
        ]

    def alias_history(self, name: str, alias: str = "") -> list[AliasChange]:
        """Changes of ``alias`` (all aliases when empty), oldest first; ``[]`` for unknown."""
        model = self.models.get(name)
        if model is None:
            return []
        return [c for c in model.history if not alias or c.alias == alias]

    def alias_at(self, name: str, alias: str, when: datetime) -> int | None:
        """The version ``alias`` pointed at at ``when`` (``None``: unset then)."""
        pointed: int | None = None
        for change in self.alias_history(name, alias):
            if change.changed_at > when:
                break
            pointed = change.version
        return pointed

    @property
    def version_count(self) -> int:
        """Versions over all models."""
        return sum(m.latest for m in self.models.values())

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of the whole state (for tests and debugging)."""
        models = {
            name: {
                "versions": [v.model_dump(mode="json") for v in m.versions],
                "aliases": dict(m.aliases),
                "history": [c.model_dump(mode="json") for c in m.history],
                "dedup": dict(m.dedup),
                "unserved": [u.model_dump(mode="json") for u in m.unserved],
                "unserved_seen": sorted(m.unserved_seen),
            }
            for name, m in sorted(self.models.items())
        }
        if not self.writers:
            return models
        # "_" cannot start a model name.
        writers = {r: c.model_dump(mode="json") for r, c in sorted(self.writers.items())}
        return {**models, "_writers": writers}
