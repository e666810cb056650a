"""The real registry behind :class:`CandidateSink`, over the registry's gRPC client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from driftline.artifacts import verify
from driftline.contracts.errors import FailedPreconditionError, NotFoundError, UnavailableError
from driftline.model_runtimes import runtime_for
from driftline.registry_api.models import SKLEARN_INPUT_TAG, ModelVersionInfo, WriterLease
from driftline.registry_client import RegistryClient
from driftline.training.candidates import NewVersion, RegisteredVersion, VerifiedArtifact
from driftline.training.recurring import ChampionChange

_T = TypeVar("_T")

WRITER_ROLE = "training"
"""The one-writer role the active trainer claims in the registry."""

TRAINER_TAG = "driftline.trainer"
"""Tag of every version training registers: the instance id of the trainer that did."""


def _registered(info: ModelVersionInfo) -> RegisteredVersion:
    return RegisteredVersion(
        info.name,
        info.version,
        dict(info.metrics),
        info.lineage,
        tuple(info.aliases),
        framework=info.framework or "river",
    )


class RegistrySink:
    """Registers candidates with the registry and reads its champion.

    A model is uploaded as its framework's runtime writes it (:meth:`ModelRuntime.dump`:
    ``river-pickle``, ``sklearn-pickle``).  A
    champion is downloaded and its digest and HMAC signature verified (under
    ``signing_key``) before anything deserialises it.

    With ``fenced=True`` (the service) every change is made under :attr:`writer`, the
    claim of the ``training`` role this trainer made when it became the active one; before
    that claim a change is refused as :class:`UnavailableError` (retried later), and once
    the registry refuses one because another trainer claimed the role since,
    :attr:`deposed` is set (the service then stops this trainer).
    """

    def __init__(
        self,
        client: RegistryClient,
        signing_key: str,
        *,
        fenced: bool = False,
        instance_id: str = "",
    ) -> None:
        self.client = client
        self.signing_key = signing_key
        self.fenced = fenced
        self.instance_id = instance_id
        self.writer: WriterLease | None = None
        """The claim this trainer's changes are made under (set once it is active)."""
        self.deposed = asyncio.Event()
        """Set when the registry refused a change: another trainer holds the role."""

    def _lease(self) -> WriterLease | None:
        if self.fenced and self.writer is None:
            raise UnavailableError(
                "this trainer is a standby: it changes the registry only once it holds "
                f"the {WRITER_ROLE!r} writer role"
            )
        return self.writer

    async def _guarded(self, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except FailedPreconditionError as exc:
            if str(exc).startswith("fenced:"):
                self.deposed.set()
            raise

    async def register(self, name: str, model: Any, new: NewVersion) -> RegisteredVersion:
        framework = new.framework
        runtime = runtime_for(framework)
        if framework == "river":
            # On the event loop: a River model may be the learner that goes on learning
            # there, which a thread must not pickle half-way through an update.
            data = runtime.dump(model)
        else:
            # A batch fit is nobody else's; pickling an ensemble takes a while.
            data = await asyncio.to_thread(runtime.dump, model)
        lease = self._lease()
        tags = {SKLEARN_INPUT_TAG: "array"} if framework == "sklearn" else {}
        if self.instance_id:
            tags[TRAINER_TAG] = self.instance_id
        call = self.client.register(
            name,
            data,
            metrics=new.metrics,
            lineage=new.lineage,
            spec=new.spec,
            trigger_id=new.lineage.trigger_id,
            actor=new.actor,
            idempotency_key=new.idempotency_key,
            drift_ids=new.drift_ids,
            artifact_format=runtime.formats[0],
            framework=framework,
            library_versions=new.library_versions,
            # Training fits estimators on the float matrix in the spec's feature order.
            tags=tags or None,
            writer=lease,
        )
        return _registered(await self._guarded(call))

    async def champion_version(self, name: str) -> RegisteredVersion | None:
        try:
            return _registered(await self.client.get(name, alias="champion"))
        except NotFoundError:
            return None

    async def load_model(self, name: str, version: int) -> Any:
        model, _ = await self.client.load_model(name, signing_key=self.signing_key, version=version)
        return model

    async def load_artifact(self, name: str, version: int) -> VerifiedArtifact:
        data, meta = await self.client.download(name, version=version)
        # Raises IntegrityError for a tampered, unsigned or foreign-signed artifact: the
        # bytes never reach a runtime (a pickle runs code as it loads).
        await asyncio.to_thread(verify, data, meta.sha256, meta.signature, self.signing_key)
        mv = meta.model_version
        return VerifiedArtifact(
            mv.framework or "river",
            meta.artifact_format or mv.artifact_format,
            data,
            dict(mv.spec),
        )

    async def set_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str, trigger_id: str
    ) -> None:
        lease = self._lease()
        await self._guarded(
            self.client.set_alias(
                name, alias, version, actor=actor, reason=reason, trigger_id=trigger_id,
                writer=lease,
            )
        )  # fmt: skip

    async def find_by_trigger(self, name: str, trigger_id: str) -> RegisteredVersion | None:
        try:
            versions = await self.client.list_versions(name)
        except NotFoundError:
            return None
        for v in versions:
            if v.lineage is not None and v.lineage.trigger_id == trigger_id:
                return _registered(v)
        return None

    async def get_version(self, name: str, version: int) -> RegisteredVersion:
        return _registered(await self.client.get(name, version=version))

    async def champion_changes(self, name: str) -> list[ChampionChange]:
        try:
            changes = await self.client.history(name, alias="champion")
        except NotFoundError:
            return []
        return [ChampionChange(c.version, c.reason, c.trigger_id) for c in changes]

    async def record_unserved_retrain(
        self, name: str, request_id: str, *, reason: str, actor: str, drift_ids: Sequence[str]
    ) -> int:
        lease = self._lease()
        return await self._guarded(
            self.client.record_unserved_retrain(
                name, request_id, reason=reason, actor=actor, drift_ids=drift_ids, writer=lease
            )
        )
