"""The ``driftline.v1.Registry`` gRPC servicer: parse, call the core, format.

Every method goes through the shared edge (:class:`driftline.edge.server.ServerEdge`):
it continues the caller's trace, refuses a call whose deadline has passed (a
change above all must not be made for a caller that was told it failed), asks
:meth:`RegistryServicer.authorize` before every call (the role each RPC needs is
:data:`METHOD_ROLES`), answers a
:class:`DriftlineError` from the core with its status and message and anything
else with INTERNAL (logged), and times every call into
``driftline_request_latency_seconds{method, code}``.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeAlias

import grpc
from opentelemetry import trace

from driftline.artifacts import SIGNATURE_ALGORITHM
from driftline.contracts.errors import InvalidArgumentError, UnauthenticatedError
from driftline.edge.server import ServerEdge
from driftline.registry.core import Registration, RegistryCore
from driftline.registry_api.convert import (
    alias_change_to_pb,
    datetime_from_pb,
    lineage_from_pb,
    params_from_pb,
    same_named,
    struct_to_dict,
    summary_to_pb,
    version_to_pb,
    writer_claim_to_pb,
    writer_lease_from_pb,
)
from driftline.registry_api.models import AliasChange, ModelVersionInfo
from driftline.security.roles import Role, RoleGuard
from driftline.telemetry import Children, ServiceMetrics
from driftline.v1 import registry_pb2, registry_pb2_grpc

__all__ = ["METHOD_ROLES", "RegistryServicer"]

_Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
_EDGE = ServerEdge(
    "driftline.v1.Registry", trace.get_tracer("driftline.registry"), component="the registry"
)

METHOD_ROLES: Mapping[str, Role] = {
    "GetVersion": "reader",
    "ListVersions": "reader",
    "ListModels": "reader",
    "DownloadArtifact": "reader",
    "GetAliasHistory": "reader",
    "RegisterVersion": "trainer",
    "RecordUnservedRetrain": "trainer",
    "ClaimWriter": "trainer",
    "SetAlias": "promoter",
    "DeleteAlias": "promoter",
    "Rollback": "promoter",
}
"""The role each Registry RPC needs (``driftline.security.roles``: admin may do everything,
every role may read)."""


def _selector(request: Any) -> tuple[int | None, str | None]:
    which = request.WhichOneof("selector")
    if which == "version":
        if request.version < 1:
            raise InvalidArgumentError(f"version must be >= 1, got {request.version}")
        return int(request.version), None
    if which == "alias":
        return None, str(request.alias)
    return None, None


def _change_response(
    change: AliasChange, version: ModelVersionInfo | None
) -> registry_pb2.AliasChangeResponse:
    resp = registry_pb2.AliasChangeResponse(change=alias_change_to_pb(change))
    if version is not None:
        resp.model_version.CopyFrom(version_to_pb(version))
    return resp


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    """Thin gRPC edge over :class:`RegistryCore`."""

    def __init__(
        self,
        core: RegistryCore,
        metrics: ServiceMetrics,
        *,
        token: str | None = None,
        chunk_bytes: int = 1024 * 1024,
        roles: RoleGuard | None = None,
    ) -> None:
        self.core = core
        self.metrics = metrics
        self._latency = Children(metrics.request_latency)
        self._expected_auth = f"Bearer {token}" if token else None
        self._roles = roles
        self._chunk = chunk_bytes

    def record_rpc(self, method: str, code: str, seconds: float) -> None:
        """Time one call into ``driftline_request_latency_seconds{method, code}``."""
        self._latency(method, code).observe(seconds)

    def authorize(self, method: str, context: _Ctx) -> None:
        """Refuse the call unless the caller may make it.

        The edge asks before every call. With ``roles`` (a roles file, or secure mode)
        the caller's roles decide (PERMISSION_DENIED names the role needed); without,
        reads are open and changes need the one configured token, when there is one.
        """
        if self._roles is not None:
            self._roles.authorize(method, context)
            return
        if self._expected_auth is None or METHOD_ROLES[method] == "reader":
            return
        sent = next(
            (str(v) for k, v in (context.invocation_metadata() or ()) if k == "authorization"),
            None,
        )
        if sent is None:
            raise UnauthenticatedError(
                "this registry requires a token for changes: send the metadata "
                "'authorization: Bearer <token>' (the registry's DRIFTLINE_REGISTRY__TOKEN)"
            )
        if not hmac.compare_digest(sent.encode(), self._expected_auth.encode()):
            raise UnauthenticatedError(
                "the 'authorization' metadata is not 'Bearer <token>' with this registry's token"
            )

    @_EDGE.unary("RegisterVersion", guarded=True)
    async def RegisterVersion(
        self,
        request_iterator: AsyncIterator[registry_pb2.RegisterVersionRequest],
        context: _Ctx,
    ) -> registry_pb2.ModelVersion:
        """Upload: metadata first, then chunks."""
        meta: registry_pb2.RegisterVersionMetadata | None = None
        parts: list[bytes] = []
        received = 0
        limit = self.core.max_artifact_bytes
        async for msg in request_iterator:
            which = msg.WhichOneof("payload")
            if meta is None:
                if which != "metadata":
                    raise InvalidArgumentError(
                        "the first RegisterVersion message must carry `metadata` "
                        "(model name, metrics, lineage); artifact chunks follow it"
                    )
                meta = msg.metadata
                continue
            if which != "chunk":
                raise InvalidArgumentError("only the first RegisterVersion message may be metadata")
            received += len(msg.chunk)
            if received > limit:
                raise InvalidArgumentError(
                    f"the artifact exceeds the limit of {limit} bytes "
                    "(DRIFTLINE_REGISTRY__MAX_ARTIFACT_BYTES)"
                )
            parts.append(msg.chunk)
        if meta is None:
            raise InvalidArgumentError("RegisterVersion got no messages; send metadata then chunks")
        lineage, drift_ids = lineage_from_pb(meta.lineage)
        reg = Registration(
            name=meta.model_name,
            metrics=dict(meta.metrics),
            lineage=lineage,
            drift_ids=drift_ids,
            params=params_from_pb(meta.params),
            spec=struct_to_dict(meta.spec),
            tags=dict(meta.tags),
            library_versions=dict(meta.library_versions),
            framework=meta.framework,
            writer=writer_lease_from_pb(meta),
            **same_named(
                meta, ("artifact_format", "sha256", "size_bytes", "actor", "idempotency_key")
            ),
        )
        version, _created = await self.core.register(reg, b"".join(parts))
        return version_to_pb(version)

    @_EDGE.unary("GetVersion", guarded=True)
    async def GetVersion(
        self, request: registry_pb2.GetVersionRequest, context: _Ctx
    ) -> registry_pb2.ModelVersion:
        """One version by number, alias or latest."""
        version, alias = _selector(request)
        return version_to_pb(self.core.get(request.name, version, alias))

    @_EDGE.unary("ListVersions", guarded=True)
    async def ListVersions(
        self, request: registry_pb2.ListVersionsRequest, context: _Ctx
    ) -> registry_pb2.ListVersionsResponse:
        """A page of versions."""
        if request.page_size < 0:
            raise InvalidArgumentError("page_size must be >= 0 (0: server default)")
        page, nxt = self.core.list_versions(request.name, request.page_size, request.page_token)
        return registry_pb2.ListVersionsResponse(
            versions=[version_to_pb(v) for v in page], next_page_token=nxt
        )

    @_EDGE.unary("ListModels", guarded=True)
    async def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: _Ctx
    ) -> registry_pb2.ListModelsResponse:
        """Every model."""
        return registry_pb2.ListModelsResponse(
            models=[summary_to_pb(m) for m in self.core.list_models()]
        )

    @_EDGE.server_stream("DownloadArtifact", guarded=True)
    async def DownloadArtifact(
        self,
        request: registry_pb2.DownloadArtifactRequest,
        context: _Ctx,
    ) -> AsyncIterator[registry_pb2.DownloadArtifactResponse]:
        """Metadata first (with sha256 and signature), then chunks."""
        version, alias = _selector(request)
        info, data = await self.core.artifact(request.name, version, alias)
        yield registry_pb2.DownloadArtifactResponse(
            metadata=registry_pb2.ArtifactMetadata(
                model_version=version_to_pb(info),
                size_bytes=len(data),
                sha256=info.sha256,
                signature=info.signature,
                signature_algorithm=SIGNATURE_ALGORITHM,
                signature_key_id=info.signature_key_id,
                artifact_format=info.artifact_format,
            )
        )
        for offset in range(0, len(data), self._chunk):
            yield registry_pb2.DownloadArtifactResponse(chunk=data[offset : offset + self._chunk])

    @_EDGE.unary("SetAlias", guarded=True)
    async def SetAlias(
        self, request: registry_pb2.SetAliasRequest, context: _Ctx
    ) -> registry_pb2.AliasChangeResponse:
        """Move an alias."""
        if request.version < 1:
            raise InvalidArgumentError(f"version must be >= 1, got {request.version}")
        change, version = await self.core.set_alias(
            request.name,
            request.alias,
            request.version,
            actor=request.actor,
            reason=request.reason,
            expected_version=(
                request.expected_version if request.HasField("expected_version") else None
            ),
            trigger_id=request.trigger_id,
            writer=writer_lease_from_pb(request),
        )
        return _change_response(change, version)

    @_EDGE.unary("DeleteAlias", guarded=True)
    async def DeleteAlias(
        self, request: registry_pb2.DeleteAliasRequest, context: _Ctx
    ) -> registry_pb2.AliasChangeResponse:
        """Remove an alias."""
        change = await self.core.delete_alias(
            request.name, request.alias, actor=request.actor, reason=request.reason
        )
        return _change_response(change, None)

    @_EDGE.unary("Rollback", guarded=True)
    async def Rollback(
        self, request: registry_pb2.RollbackRequest, context: _Ctx
    ) -> registry_pb2.AliasChangeResponse:
        """Move an alias back."""
        as_of = datetime_from_pb(request.as_of) if request.HasField("as_of") else None
        change, version = await self.core.rollback(
            request.name,
            request.alias or "champion",
            as_of=as_of,
            actor=request.actor,
            reason=request.reason,
        )
        return _change_response(change, version)

    @_EDGE.unary("GetAliasHistory", guarded=True)
    async def GetAliasHistory(
        self,
        request: registry_pb2.GetAliasHistoryRequest,
        context: _Ctx,
    ) -> registry_pb2.GetAliasHistoryResponse:
        """Alias changes, oldest first."""
        if request.limit < 0:
            raise InvalidArgumentError("limit must be >= 0 (0: no limit)")
        changes = self.core.history(request.name, request.alias, request.limit)
        return registry_pb2.GetAliasHistoryResponse(
            changes=[alias_change_to_pb(c) for c in changes]
        )

    @_EDGE.unary("RecordUnservedRetrain", guarded=True)
    async def RecordUnservedRetrain(
        self,
        request: registry_pb2.RecordUnservedRetrainRequest,
        context: _Ctx,
    ) -> registry_pb2.RecordUnservedRetrainResponse:
        """Keep a retrain request Driftline cannot serve on the model (once per request id)."""
        unserved = await self.core.record_unserved_retrain(
            request.model_name,
            request.request_id,
            request.reason,
            actor=request.actor,
            drift_ids=list(request.drift_ids),
            writer=writer_lease_from_pb(request),
        )
        return registry_pb2.RecordUnservedRetrainResponse(unserved=unserved)

    @_EDGE.unary("ClaimWriter", guarded=True)
    async def ClaimWriter(
        self, request: registry_pb2.ClaimWriterRequest, context: _Ctx
    ) -> registry_pb2.WriterClaim:
        """Claim a one-writer role; later mutations under its older claims are refused."""
        return writer_claim_to_pb(await self.core.claim_writer(request.role, request.holder))
