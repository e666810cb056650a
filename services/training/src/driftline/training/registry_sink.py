"""The real registry behind :class:`CandidateSink`, over the registry's gRPC client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from driftline.contracts.errors import NotFoundError
from driftline.contracts.messages import Lineage
from driftline.registry_client import ModelVersionInfo, RegistryClient
from driftline.training.candidates import RegisteredVersion


def _registered(info: ModelVersionInfo) -> RegisteredVersion:
    return RegisteredVersion(
        info.name, info.version, dict(info.metrics), info.lineage, tuple(info.aliases)
    )


class RegistrySink:
    """Registers candidates with the registry and reads its champion.

    Models are uploaded as ``river-pickle``; the champion is downloaded and its
    digest and HMAC signature verified (under ``signing_key``) before it is
    unpickled.
    """

    def __init__(self, client: RegistryClient, signing_key: str) -> None:
        self.client = client
        self.signing_key = signing_key

    async def register(
        self,
        name: str,
        model: Any,
        *,
        metrics: Mapping[str, float],
        lineage: Lineage,
        spec: Mapping[str, Any],
        idempotency_key: str,
        actor: str,
        drift_ids: tuple[str, ...] = (),
    ) -> RegisteredVersion:
        info = await self.client.register(
            name,
            model=model,
            metrics=metrics,
            lineage=lineage,
            spec=spec,
            trigger_id=lineage.trigger_id,
            actor=actor,
            idempotency_key=idempotency_key,
            drift_ids=drift_ids,
        )
        return _registered(info)

    async def champion_version(self, name: str) -> RegisteredVersion | None:
        try:
            return _registered(await self.client.get(name, alias="champion"))
        except NotFoundError:
            return None

    async def load_model(self, name: str, version: int) -> Any:
        model, _ = await self.client.load_model(name, signing_key=self.signing_key, version=version)
        return model

    async def set_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str, trigger_id: str
    ) -> None:
        await self.client.set_alias(
            name, alias, version, actor=actor, reason=reason, trigger_id=trigger_id
        )

    async def find_by_trigger(self, name: str, trigger_id: str) -> RegisteredVersion | None:
        try:
            versions = await self.client.list_versions(name)
        except NotFoundError:
            return None
        for v in versions:
            if v.lineage is not None and v.lineage.trigger_id == trigger_id:
                return _registered(v)
        return None
