"""The registry core: validation, version numbering, aliases, rollback — no sockets.

Every mutation becomes a :class:`RegistryEvent` handed to ``publish`` (the
Kafka log in production).  The core's state changes only when the event comes
back through :meth:`RegistryCore.on_event` (the log follower), and a mutation
returns only once its own event has been applied — so what a caller is told
is exactly what every replica will rebuild from the log.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from driftline.artifacts import ArtifactStore, digest, key_id, sign
from driftline.contracts.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from driftline.contracts.messages import Lineage, RegistryEvent, RegistryEventKind, utcnow
from driftline.registry.admission import FeatureSets, admit
from driftline.registry.state import (
    DELETED_VERSION,
    EXTRAS_KEY,
    MODEL_NAME,
    ApplyOutcome,
    ModelState,
    RegistryState,
)
from driftline.registry_api.models import (
    ALIASES,
    AliasChange,
    ModelSummary,
    ModelVersionInfo,
    ParamValue,
    WriterClaim,
    WriterLease,
)
from driftline.registry_api.promotion import Decision, PromotionPolicy, decide_promotion

__all__ = [
    "Decision",
    "PromotionPolicy",
    "Registration",
    "RegistryCore",
    "decide_promotion",
    "validate_alias",
    "validate_model_name",
]

_MAX_REQUEST_ID = 256
_MAX_REASON = 2000
_MAX_DRIFT_IDS = 100

_MAX_ROLE = 64
_MAX_HOLDER = 256

Publish = Callable[[RegistryEvent], Awaitable[None]]
"""Writes one event durably to the log (``acks=all``); returns once it is written."""


def validate_model_name(name: str) -> str:
    """``name`` if it is a valid model name, else :class:`InvalidArgumentError`."""
    if not name:
        raise InvalidArgumentError("model name is empty; pass the model's name (e.g. 'loans')")
    if not MODEL_NAME.match(name):
        raise InvalidArgumentError(
            f"model name {name!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_alias(alias: str) -> str:
    """``alias`` if it is one of the allowed aliases, else :class:`InvalidArgumentError`."""
    if alias not in ALIASES:
        raise InvalidArgumentError(
            f"alias {alias!r} is not allowed; use one of {', '.join(ALIASES)}"
        )
    return alias


@dataclass(frozen=True)
class Registration:
    """Everything about a new version except its bytes (the RegisterVersion metadata)."""

    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: Lineage | None = None
    drift_ids: list[str] = field(default_factory=list)
    params: dict[str, ParamValue] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    artifact_format: str = ""
    sha256: str = ""
    """Expected digest (hex); checked when not empty."""
    size_bytes: int = 0
    """Expected size; checked when not 0."""
    actor: str = ""
    idempotency_key: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    framework: str = ""
    """The runtime that serves it; empty: the spec's ``framework``, else ``river``."""
    library_versions: dict[str, str] = field(default_factory=dict)
    writer: WriterLease | None = None
    """The one-writer role it is registered under (refused once a later claim is on the log)."""

    @property
    def dedup_key(self) -> str | None:
        """The idempotency key, else the lineage's trigger id, else ``None``."""
        if self.idempotency_key:
            return self.idempotency_key
        return self.lineage.trigger_id if self.lineage and self.lineage.trigger_id else None


class RegistryCore:
    """Registry logic over a :class:`RegistryState` fed by the log.

    ``publish`` writes an event; the log follower must call :meth:`on_event`
    for every event of the log, in order (including this core's own).
    Mutations are serialized by one lock per process; across replicas,
    conflicting events are resolved by log order (see :mod:`driftline.registry.state`).
    """

    def __init__(
        self,
        store: ArtifactStore,
        signing_key: str,
        publish: Publish,
        *,
        write_timeout_s: float = 30.0,
        max_attempts: int = 8,
        max_artifact_bytes: int = 512 * 1024 * 1024,
        clock: Callable[[], datetime] = utcnow,
        featuresets_dir: Path | None = None,
    ) -> None:
        if not signing_key:
            raise InvalidArgumentError(
                "the registry needs a signing key: set DRIFTLINE_REGISTRY__SIGNING_KEY"
            )
        self.store = store
        self.state = RegistryState()
        self.caught_up = False
        """True once the log has been replayed to the end seen at start."""
        self._key = signing_key
        self.key_id = key_id(signing_key)
        self._publish = publish
        self._write_timeout_s = write_timeout_s
        self._max_attempts = max_attempts
        self.max_artifact_bytes = max_artifact_bytes
        self._clock = clock
        self.featuresets = FeatureSets(featuresets_dir)
        """What a version's inputs are checked against at registration."""
        self._lock = asyncio.Lock()
        self._waiters: dict[str, asyncio.Future[ApplyOutcome]] = {}

    # -- the log ------------------------------------------------------------------

    def on_event(self, event: RegistryEvent) -> ApplyOutcome:
        """Apply one event read from the log and wake the writer waiting for it.

        Re-raises whatever applying it raised (the follower skips the event), after
        handing the error to the writer waiting for it, if any.
        """
        try:
            outcome = self.state.apply(event)
        except Exception as exc:
            failed = self._waiters.pop(event.event_id, None)
            if failed is not None and not failed.done():
                failed.set_exception(exc)
            raise
        waiter = self._waiters.pop(event.event_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)
        return outcome

    async def _commit(self, event: RegistryEvent) -> ApplyOutcome:
        if not self.caught_up:
            raise UnavailableError(
                "the registry is still replaying driftline.models; retry in a moment"
            )
        waiter: asyncio.Future[ApplyOutcome] = asyncio.get_running_loop().create_future()
        self._waiters[event.event_id] = waiter
        try:
            await self._publish(event)
            return await asyncio.wait_for(waiter, self._write_timeout_s)
        except TimeoutError as exc:
            raise UnavailableError(
                f"event {event.event_id} was written but not read back from driftline.models "
                f"within {self._write_timeout_s:.0f}s; check the registry's log follower"
            ) from exc
        finally:
            self._waiters.pop(event.event_id, None)

    def _check_writer(self, writer: WriterLease | None) -> dict[str, Any]:
        """Refuse a mutation under a writer role another claim has taken since; else the
        extras that carry the role on its event (empty when it has none)."""
        fenced = self.state.fenced(writer)
        if fenced is not None:
            raise FailedPreconditionError(fenced)
        return {} if writer is None else {"writer": writer.model_dump()}

    @staticmethod
    def _raise_if_fenced(outcome: ApplyOutcome) -> None:
        # A claim applied between our check and our event: the log refused it.
        if not outcome.applied and outcome.reason.startswith("fenced:"):
            raise FailedPreconditionError(outcome.reason)

    async def claim_writer(self, role: str, holder: str) -> WriterClaim:
        """Claim one-writer role ``role`` for ``holder``: the claim the log applied.

        Every mutation made under an older claim of the role is refused from then on (see
        :mod:`driftline.registry.state`).  Claiming is not a lock: the latest claim wins, so
        the caller must already be the only candidate (training: the member of its consumer
        group that holds ``driftline.retrain``).
        """
        if not role or len(role) > _MAX_ROLE:
            raise InvalidArgumentError(f"role must be 1-{_MAX_ROLE} characters, got {role!r:.80}")
        if not holder or len(holder) > _MAX_HOLDER:
            raise InvalidArgumentError(
                f"holder must be 1-{_MAX_HOLDER} characters (an instance id), got {holder!r:.80}"
            )
        async with self._lock:
            event = self._event(
                RegistryEventKind.WRITER_CLAIMED, "", 0, actor=holder, trigger=role,
                reason=f"{holder} claims writer role {role}",
            )  # fmt: skip
            outcome = await self._commit(event)
            if not outcome.applied:
                raise UnavailableError(f"the claim of {role!r} was not applied ({outcome.reason})")
            return self.state.writers[role]

    def writer(self, role: str) -> WriterClaim | None:
        """The current claim of ``role``, if any."""
        return self.state.writers.get(role)

    def _event(self, kind: RegistryEventKind, name: str, version: int, **kw: Any) -> RegistryEvent:
        actor = kw.pop("actor", "") or "anonymous"
        return RegistryEvent(
            event_id=uuid.uuid4().hex,
            kind=kind,
            model_name=name,
            version=version,
            actor=actor,
            at=self._clock(),
            **kw,
        )

    # -- reads --------------------------------------------------------------------

    def model(self, name: str) -> ModelState:
        """The model called ``name``; :class:`NotFoundError` lists the known ones."""
        validate_model_name(name)
        model = self.state.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.state.models)) or "none yet"
            raise NotFoundError(f"model {name!r} is not registered (registered models: {known})")
        return model

    def get(
        self, name: str, version: int | None = None, alias: str | None = None
    ) -> ModelVersionInfo:
        """A version by number or alias, the latest when neither."""
        model = self.model(name)
        if alias is not None:
            validate_alias(alias)
            number = model.aliases.get(alias)
            if number is None:
                raise NotFoundError(f"model {name!r} has no {alias!r} alias set")
        elif version is not None:
            number = version
        else:
            number = model.latest
        info = model.version(number)
        if info is None:
            raise NotFoundError(
                f"model {name!r} has no version {number} (versions 1..{model.latest})"
            )
        return info

    def list_versions(
        self, name: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[ModelVersionInfo], str]:
        """A page of versions ascending and the next page token (empty at the end)."""
        model = self.model(name)
        size = page_size if page_size > 0 else 100
        try:
            start = int(page_token) if page_token else 1
        except ValueError as exc:
            raise InvalidArgumentError(
                f"page_token {page_token!r} is not one this registry issued"
            ) from exc
        numbers = range(max(start, 1), model.latest + 1)
        page = [v for n in numbers[:size] if (v := model.version(n)) is not None]
        nxt = str(start + size) if start + size <= model.latest else ""
        return page, nxt

    def list_models(self) -> list[ModelSummary]:
        """Every model with its latest version and aliases."""
        return self.state.summaries()

    def history(self, name: str, alias: str = "", limit: int = 0) -> list[AliasChange]:
        """Alias changes, oldest first; the last ``limit`` when ``limit > 0``."""
        self.model(name)
        if alias:
            validate_alias(alias)
        changes = self.state.alias_history(name, alias)
        return changes[-limit:] if limit > 0 else changes

    async def artifact(
        self, name: str, version: int | None = None, alias: str | None = None
    ) -> tuple[ModelVersionInfo, bytes]:
        """A version and its artifact bytes (digest-checked on read)."""
        info = self.get(name, version, alias)
        data = await asyncio.to_thread(self.store.get, info.sha256)
        return info, data

    # -- writes -------------------------------------------------------------------

    async def register(self, reg: Registration, data: bytes) -> tuple[ModelVersionInfo, bool]:
        """Check, store, sign and register an artifact; ``(version, created)``.

        ``created`` is False when the dedup key (idempotency key or trigger id)
        already created a version: that version is returned and nothing is written.
        A version its framework's runtime could not serve — an unknown framework or
        format, inputs that do not match its feature set, a corrupt artifact — is
        refused with :class:`InvalidArgumentError` (see :mod:`driftline.registry.admission`)
        before anything is stored or written.
        """
        validate_model_name(reg.name)
        if not data:
            raise InvalidArgumentError("the artifact is empty; send its bytes as chunks")
        if len(data) > self.max_artifact_bytes:
            raise InvalidArgumentError(
                f"the artifact is {len(data)} bytes, above the limit of "
                f"{self.max_artifact_bytes} (DRIFTLINE_REGISTRY__MAX_ARTIFACT_BYTES)"
            )
        if reg.size_bytes and reg.size_bytes != len(data):
            raise InvalidArgumentError(
                f"size mismatch: metadata says {reg.size_bytes} bytes, {len(data)} arrived"
            )
        key = reg.dedup_key
        existing = self._deduplicated(reg.name, key)
        if existing is not None:
            return existing, False
        sha = digest(data)
        if reg.sha256 and reg.sha256.lower() != sha:
            raise InvalidArgumentError(
                f"sha256 mismatch: metadata says {reg.sha256}, the bytes received hash to {sha}"
            )
        # Parsing an ONNX graph or walking a pickle's opcodes takes a while for a large
        # artifact: off the event loop, so other calls are answered meanwhile.
        admitted = await asyncio.to_thread(
            admit,
            reg.name,
            framework=reg.framework,
            artifact_format=reg.artifact_format,
            spec=reg.spec,
            data=data,
            tags=reg.tags,
            library_versions=reg.library_versions,
            featuresets=self.featuresets,
        )
        await asyncio.to_thread(self.store.put, data)
        signature = sign(data, self._key)
        extras: dict[str, Any] = {
            "params": reg.params,
            "tags": reg.tags,
            "artifact_format": admitted.artifact_format,
            "drift_ids": reg.drift_ids,
            "signature_key_id": self.key_id,
            "framework": admitted.framework,
            "library_versions": admitted.library_versions,
        }
        if reg.idempotency_key:
            extras["idempotency_key"] = reg.idempotency_key
        async with self._lock:
            for _ in range(self._max_attempts):
                existing = self._deduplicated(reg.name, key)
                if existing is not None:
                    return existing, False
                extras.update(self._check_writer(reg.writer))
                model = self.state.models.get(reg.name)
                number = (model.latest if model else 0) + 1
                event = self._event(
                    RegistryEventKind.REGISTERED,
                    reg.name,
                    number,
                    actor=reg.actor,
                    reason="registered",
                    trigger=reg.lineage.trigger_id if reg.lineage else None,
                    sha256=sha,
                    signature=signature,
                    size_bytes=len(data),
                    metrics=reg.metrics,
                    lineage=reg.lineage,
                    spec={**admitted.spec, EXTRAS_KEY: extras},
                )
                outcome = await self._commit(event)
                if outcome.applied:
                    return self.get(reg.name, number), True
                self._raise_if_fenced(outcome)
                # Another replica took this number (or this key) first: re-read and retry.
        raise UnavailableError(
            f"could not register a version of {reg.name!r} after {self._max_attempts} attempts "
            "(other writers kept taking the next number); retry"
        )

    @staticmethod
    def _change(model: ModelState, event_id: str) -> AliasChange:
        # Other replicas' events may have been applied right after ours: look ours up.
        return next(c for c in reversed(model.history) if c.event_id == event_id)

    def _deduplicated(self, name: str, key: str | None) -> ModelVersionInfo | None:
        model = self.state.models.get(name)
        if key is None or model is None or key not in model.dedup:
            return None
        return model.version(model.dedup[key])

    async def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        actor: str = "",
        reason: str = "",
        expected_version: int | None = None,
        trigger_id: str = "",
        writer: WriterLease | None = None,
    ) -> tuple[AliasChange, ModelVersionInfo]:
        """Point ``alias`` at ``version``; compare-and-set when ``expected_version`` is given;
        refused once a later claim of ``writer``'s role is on the log."""
        validate_alias(alias)
        self.get(name, version)
        async with self._lock:
            for _ in range(self._max_attempts):
                model = self.model(name)
                current = model.aliases.get(alias)
                if expected_version is not None and (current or 0) != expected_version:
                    raise FailedPreconditionError(
                        f"{name}:{alias} points at {current or 'nothing'}, not "
                        f"{expected_version or 'nothing'} as expected; re-read and retry"
                    )
                fence = self._check_writer(writer)
                event = self._event(
                    RegistryEventKind.ALIAS_SET,
                    name,
                    version,
                    alias=alias,
                    previous_version=current,
                    actor=actor,
                    reason=reason,
                    trigger=trigger_id or None,
                    spec={EXTRAS_KEY: fence} if fence else {},
                )
                outcome = await self._commit(event)
                if outcome.applied:
                    return self._change(model, event.event_id), self.get(name, version)
                self._raise_if_fenced(outcome)
        raise UnavailableError(f"could not move {name}:{alias}: concurrent changes; retry")

    async def delete_alias(
        self, name: str, alias: str, *, actor: str = "", reason: str = ""
    ) -> AliasChange:
        """Remove ``alias`` from ``name``; :class:`NotFoundError` when it is not set."""
        validate_alias(alias)
        async with self._lock:
            for _ in range(self._max_attempts):
                model = self.model(name)
                current = model.aliases.get(alias)
                if current is None:
                    raise NotFoundError(f"model {name!r} has no {alias!r} alias to delete")
                event = self._event(
                    RegistryEventKind.ALIAS_SET,
                    name,
                    DELETED_VERSION,
                    alias=alias,
                    previous_version=current,
                    actor=actor,
                    reason=reason,
                )
                if (await self._commit(event)).applied:
                    return self._change(model, event.event_id)
        raise UnavailableError(f"could not delete {name}:{alias}: concurrent changes; retry")

    def rollback_target(self, name: str, alias: str, as_of: datetime | None) -> int:
        """The version a rollback of ``alias`` would move to (see :meth:`rollback`)."""
        model = self.model(name)
        current = model.aliases.get(alias)
        if as_of is None:
            if current is None:
                raise FailedPreconditionError(f"{name}:{alias} is not set; nothing to roll back")
            last = self.state.alias_history(name, alias)[-1]
            if last.previous_version is None:
                raise FailedPreconditionError(
                    f"{name}:{alias} has no earlier version (it was first set to v{current}); "
                    "nothing to roll back to"
                )
            target = last.previous_version
        else:
            found = self.state.alias_at(name, alias, as_of)
            if found is None:
                raise FailedPreconditionError(
                    f"{name}:{alias} pointed at no version at {as_of.isoformat()}"
                )
            target = found
        if target == current:
            raise FailedPreconditionError(f"{name}:{alias} already points at v{target}")
        return target

    async def rollback(
        self,
        name: str,
        alias: str = "champion",
        *,
        as_of: datetime | None = None,
        actor: str = "",
        reason: str = "",
    ) -> tuple[AliasChange, ModelVersionInfo]:
        """Move ``alias`` back: to the version before its current one, or to where it
        pointed at ``as_of``.  :class:`FailedPreconditionError` when there is no such version.
        """
        validate_alias(alias or "champion")
        alias = alias or "champion"
        async with self._lock:
            model = self.model(name)
            current = model.aliases.get(alias)
            target = self.rollback_target(name, alias, as_of)
            event = self._event(
                RegistryEventKind.ROLLED_BACK,
                name,
                target,
                alias=alias,
                previous_version=current,
                actor=actor,
                reason=reason or ("rollback" if as_of is None else f"rollback to {as_of}"),
            )
            outcome = await self._commit(event)
            if not outcome.applied:
                raise FailedPreconditionError(
                    f"{name}:{alias} changed while rolling back ({outcome.reason}); "
                    "re-read and retry"
                )
            return self._change(model, event.event_id), self.get(name, target)

    async def reject(
        self, name: str, version: int, *, actor: str = "", reason: str = ""
    ) -> ModelVersionInfo:
        """Mark a version as rejected by the promotion policy (kept for the record)."""
        self.get(name, version)
        async with self._lock:
            event = self._event(
                RegistryEventKind.REJECTED, name, version, actor=actor, reason=reason
            )
            await self._commit(event)
            return self.get(name, version)

    async def record_unserved_retrain(
        self,
        name: str,
        request_id: str,
        reason: str,
        *,
        actor: str = "",
        drift_ids: list[str] | None = None,
        writer: WriterLease | None = None,
    ) -> int:
        """Record that retrain request ``request_id`` for ``name`` was not served; how many
        unserved requests the model has now.

        Idempotent per request id: one recorded before (even if a newer version has
        answered it since) is not recorded again.  :class:`NotFoundError` for an unknown
        model, :class:`InvalidArgumentError` for a missing request id or oversized fields.
        """
        self.model(name)  # NotFoundError before anything else
        ids = list(drift_ids or [])
        if not request_id:
            raise InvalidArgumentError("request_id is empty; send the retrain request's id")
        if len(request_id) > _MAX_REQUEST_ID:
            raise InvalidArgumentError(
                f"request_id is {len(request_id)} characters; at most {_MAX_REQUEST_ID}"
            )
        if len(reason) > _MAX_REASON:
            raise InvalidArgumentError(f"reason is {len(reason)} characters; at most {_MAX_REASON}")
        if len(ids) > _MAX_DRIFT_IDS or any(len(d) > _MAX_REQUEST_ID for d in ids):
            raise InvalidArgumentError(
                f"drift_ids: at most {_MAX_DRIFT_IDS} ids of at most {_MAX_REQUEST_ID} characters"
            )
        async with self._lock:
            model = self.model(name)
            if request_id in model.unserved_seen:
                return len(model.unserved)
            fence = self._check_writer(writer)
            event = self._event(
                RegistryEventKind.RETRAIN_UNSERVED,
                name,
                model.latest,
                actor=actor,
                reason=reason or "Driftline has no trainer for this model",
                trigger=request_id,
                spec={EXTRAS_KEY: {"drift_ids": ids, **fence}},
            )
            outcome = await self._commit(event)
            self._raise_if_fenced(outcome)
            model = self.model(name)
            # Not applied: another replica recorded the same request first, or a newer
            # version was registered ahead of it (that version answers the request).
            if (
                outcome.applied
                or request_id in model.unserved_seen
                or outcome.reason.startswith("stale:")
            ):
                return len(model.unserved)
            raise UnavailableError(
                f"could not record retrain request {request_id!r} for {name!r} "
                f"({outcome.reason}); retry"
            )
