"""A typed asyncio client of the ``driftline.v1.Registry`` gRPC service.

>>> async def example() -> None:  # doctest: +SKIP
...     async with RegistryClient("127.0.0.1:50052", token="s3cret") as registry:
...         v = await registry.register("loans", model=pipeline, metrics={"accuracy": 0.97})
...         await registry.set_alias("loans", "champion", v.version, reason="first model")
...         model, meta = await registry.load_model("loans", alias="champion", signing_key="k")
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc
from opentelemetry import propagate

from driftline.artifacts import RIVER_PICKLE, digest, dump_model
from driftline.artifacts import load_model as load_verified_model
from driftline.contracts.errors import DriftlineError, IntegrityError, InvalidArgumentError
from driftline.contracts.messages import Lineage
from driftline.edge.errors import RpcErrors
from driftline.registry_api.convert import (
    alias_change_from_pb,
    artifact_metadata_from_pb,
    datetime_to_pb,
    lineage_to_pb,
    params_to_pb,
    struct_from_dict,
    summary_from_pb,
    version_from_pb,
    writer_claim_from_pb,
    writer_lease_to_pb,
)
from driftline.registry_api.models import (
    AliasChange,
    ArtifactMetadata,
    ModelSummary,
    ModelVersionInfo,
    ParamValue,
    WriterClaim,
    WriterLease,
)
from driftline.security import grpc_tls
from driftline.settings import SecuritySettings
from driftline.v1 import registry_pb2, registry_pb2_grpc

__all__ = ["DEFAULT_CHUNK_BYTES", "AliasChangeResult", "RegistryClient"]

DEFAULT_CHUNK_BYTES = 1024 * 1024
"""Upload chunk size (well under gRPC's 4 MiB default message limit)."""

_T = TypeVar("_T")

AliasChangeResult = tuple[AliasChange, ModelVersionInfo | None]
"""The recorded change and the version the alias now points at (``None`` once deleted)."""


class RegistryClient:
    """Async client of the model registry; errors arrive as Driftline error classes.

    ``token`` is sent as ``authorization: Bearer <token>`` on every call.  With
    ``security`` in secure mode the channel is mutual TLS as ``identity`` (the
    caller's certificate, which the registry's roles bind; ``security.identity``
    overrides it).  Use as an async context manager or call :meth:`close`.  Select a
    version by number (``version=``) or alias (``alias=``); neither means the latest.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        channel: grpc.aio.Channel | None = None,
        security: SecuritySettings | None = None,
        identity: str = "client",
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        # What the registry refuses comes back as the same error class; its own failures
        # (INTERNAL, UNIMPLEMENTED) are final for a command, so a plain DriftlineError.
        self._errors = RpcErrors("registry", target, server_failure=DriftlineError)
        self.chunk_bytes = chunk_bytes
        self._token = token
        self._channel = channel or grpc_tls.channel(
            target,
            security,
            identity,
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )
        self._stub = registry_pb2_grpc.RegistryStub(self._channel)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(grace=None)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """The token, and the current trace context (``traceparent``), so the registry's
        server span is a child of the caller's (nothing is added outside a trace)."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        traced = tuple(carrier.items())
        return (("authorization", f"Bearer {self._token}"), *traced) if self._token else traced

    async def _call(self, make: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await make()
        except grpc.aio.AioRpcError as exc:
            raise self._errors.of_rpc(exc, timeout_s=self.timeout_s) from exc

    # -- versions -----------------------------------------------------------------

    async def register(
        self,
        name: str,
        model_bytes: bytes | None = None,
        *,
        model: Any = None,
        metrics: Mapping[str, float] | None = None,
        lineage: Lineage | None = None,
        spec: Mapping[str, Any] | None = None,
        trigger_id: str | None = None,
        actor: str = "",
        idempotency_key: str | None = None,
        params: Mapping[str, ParamValue] | None = None,
        tags: Mapping[str, str] | None = None,
        drift_ids: Sequence[str] = (),
        artifact_format: str | None = None,
        framework: str | None = None,
        library_versions: Mapping[str, str] | None = None,
        writer: WriterLease | None = None,
    ) -> ModelVersionInfo:
        """Upload a new version: ``model_bytes``, or a ``model`` object serialised by its
        framework's runtime (``river-pickle`` for River).

        ``framework`` names the runtime that serves it (``river``, ``sklearn``, ``onnx``,
        ``python``); without it the spec's ``framework``, else ``river``.
        ``artifact_format`` is the serialisation of the bytes (one its runtime reads;
        without it ``river-pickle`` for River, else the runtime's first format, which
        the registry fills in).  ``library_versions`` records what wrote it
        (``{"scikit-learn": "1.9.1"}``).

        The registry checks a non-River version against its feature set before it
        registers anything (:class:`InvalidArgumentError` naming the feature, format or
        framework at fault).

        ``trigger_id`` is recorded in the lineage (it overrides ``lineage.trigger_id``)
        and, without an ``idempotency_key``, is the dedup key: registering the
        same trigger twice returns the version the first call created.

        ``writer`` is the one-writer role the registration is made under (see
        :meth:`claim_writer`): refused with :class:`FailedPreconditionError` once a later
        claim of the role is on the log.
        """
        if (model_bytes is None) == (model is None):
            raise InvalidArgumentError("pass exactly one of model_bytes or model")
        resolved = framework or str((spec or {}).get("framework") or "") or "river"
        if model_bytes is not None:
            data = model_bytes
        elif resolved == "river":
            data = dump_model(model)
        else:
            from driftline.model_runtimes import runtime_for

            data = runtime_for(resolved).dump(model)
        if artifact_format is None:
            artifact_format = RIVER_PICKLE if resolved == "river" else ""
        if trigger_id is not None:
            lineage = (lineage or Lineage(featureset="", featureset_version=0)).model_copy(
                update={"trigger_id": trigger_id}
            )
        metadata = registry_pb2.RegisterVersionMetadata(
            model_name=name,
            metrics=dict(metrics or {}),
            lineage=lineage_to_pb(lineage, list(drift_ids)),
            params=params_to_pb(params or {}),
            spec=struct_from_dict(spec or {}),
            artifact_format=artifact_format,
            sha256=digest(data),
            size_bytes=len(data),
            actor=actor,
            idempotency_key=idempotency_key or "",
            tags=dict(tags or {}),
            framework=framework or "",
            library_versions=dict(library_versions or {}),
            writer=writer_lease_to_pb(writer),
        )
        chunk = self.chunk_bytes

        async def requests() -> AsyncIterator[registry_pb2.RegisterVersionRequest]:
            yield registry_pb2.RegisterVersionRequest(metadata=metadata)
            for start in range(0, len(data), chunk):
                yield registry_pb2.RegisterVersionRequest(chunk=data[start : start + chunk])

        pb = await self._call(
            lambda: self._stub.RegisterVersion(
                requests(), metadata=self._metadata(), timeout=self.timeout_s
            )
        )
        return version_from_pb(pb)

    async def get(
        self, name: str, version: int | None = None, alias: str | None = None
    ) -> ModelVersionInfo:
        """One version by number or alias (the latest when neither is given)."""
        req = registry_pb2.GetVersionRequest(name=name)
        if version is not None:
            req.version = version
        elif alias is not None:
            req.alias = alias
        pb = await self._call(
            lambda: self._stub.GetVersion(req, metadata=self._metadata(), timeout=self.timeout_s)
        )
        return version_from_pb(pb)

    async def list_versions(self, name: str, page_size: int = 0) -> list[ModelVersionInfo]:
        """Every version of ``name``, ascending (pages are followed to the end)."""
        out: list[ModelVersionInfo] = []
        token = ""
        while True:
            req = registry_pb2.ListVersionsRequest(name=name, page_size=page_size, page_token=token)
            resp = await self._call(
                lambda r=req: self._stub.ListVersions(  # type: ignore[misc]
                    r, metadata=self._metadata(), timeout=self.timeout_s
                )
            )
            out.extend(version_from_pb(v) for v in resp.versions)
            token = resp.next_page_token
            if not token:
                return out

    async def list_models(self) -> list[ModelSummary]:
        """Every registered model with its latest version and aliases."""
        resp = await self._call(
            lambda: self._stub.ListModels(
                registry_pb2.ListModelsRequest(), metadata=self._metadata(), timeout=self.timeout_s
            )
        )
        return [summary_from_pb(m) for m in resp.models]

    # -- artifacts ----------------------------------------------------------------

    async def download(
        self, name: str, version: int | None = None, alias: str | None = None
    ) -> tuple[bytes, ArtifactMetadata]:
        """The artifact bytes and their metadata; the bytes are NOT verified here.

        Use :meth:`load_model` (or :func:`driftline.artifacts.load_model`) to
        verify the digest and signature before deserializing.
        """
        req = registry_pb2.DownloadArtifactRequest(name=name)
        if version is not None:
            req.version = version
        elif alias is not None:
            req.alias = alias

        async def collect() -> tuple[bytes, ArtifactMetadata]:
            meta: ArtifactMetadata | None = None
            parts: list[bytes] = []
            call = self._stub.DownloadArtifact(
                req, metadata=self._metadata(), timeout=self.timeout_s
            )
            async for msg in call:
                which = msg.WhichOneof("payload")
                if which == "metadata":
                    meta = artifact_metadata_from_pb(msg.metadata)
                elif which == "chunk":
                    if meta is None:
                        raise IntegrityError(
                            "the registry sent artifact bytes before their metadata; refused"
                        )
                    parts.append(msg.chunk)
            if meta is None:
                raise IntegrityError(f"the registry sent no artifact metadata for {name!r}")
            return b"".join(parts), meta

        return await self._call(collect)

    async def load_model(
        self,
        name: str,
        *,
        signing_key: str | bytes,
        version: int | None = None,
        alias: str | None = None,
    ) -> tuple[Any, ArtifactMetadata]:
        """Download, verify (digest + HMAC under ``signing_key``), then unpickle.

        Raises :class:`IntegrityError` for a tampered, unsigned or foreign-signed
        artifact; nothing is deserialized then.
        """
        data, meta = await self.download(name, version=version, alias=alias)
        if meta.artifact_format and meta.artifact_format != RIVER_PICKLE:
            raise InvalidArgumentError(
                f"{name} v{meta.model_version.version} is a {meta.artifact_format!r} artifact; "
                f"load_model reads {RIVER_PICKLE!r} only (use download())"
            )
        return load_verified_model(data, meta.sha256, meta.signature, signing_key), meta

    # -- retrain requests ---------------------------------------------------------

    async def record_unserved_retrain(
        self,
        name: str,
        request_id: str,
        *,
        reason: str,
        actor: str = "",
        drift_ids: Sequence[str] = (),
        writer: WriterLease | None = None,
    ) -> int:
        """Record on ``name`` that retrain request ``request_id`` cannot be served, and why
        (recording the same request twice is a no-op); returns how many unserved requests
        the model now has."""
        req = registry_pb2.RecordUnservedRetrainRequest(
            model_name=name, request_id=request_id, reason=reason, actor=actor,
            drift_ids=list(drift_ids), writer=writer_lease_to_pb(writer),
        )  # fmt: skip
        resp = await self._call(
            lambda: self._stub.RecordUnservedRetrain(
                req, metadata=self._metadata(), timeout=self.timeout_s
            )
        )
        return int(resp.unserved)

    # -- one-writer roles -----------------------------------------------------------

    async def claim_writer(self, role: str, holder: str) -> WriterClaim:
        """Claim one-writer role ``role`` (e.g. ``training``) for ``holder``.

        The answer's :attr:`WriterClaim.lease` goes on every later mutation; once another
        holder claims the role, those mutations are refused (FAILED_PRECONDITION, raised as
        :class:`FailedPreconditionError`).  The latest claim wins: claim only once the
        caller is the one candidate (training: the holder of ``driftline.retrain``).
        """
        req = registry_pb2.ClaimWriterRequest(role=role, holder=holder)
        resp = await self._call(
            lambda: self._stub.ClaimWriter(req, metadata=self._metadata(), timeout=self.timeout_s)
        )
        return writer_claim_from_pb(resp)

    # -- aliases ------------------------------------------------------------------

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
    ) -> AliasChangeResult:
        """Point ``alias`` at ``version``; ``expected_version`` makes it compare-and-set;
        ``writer`` fences it (see :meth:`claim_writer`)."""
        req = registry_pb2.SetAliasRequest(
            name=name, alias=alias, version=version, actor=actor, reason=reason,
            trigger_id=trigger_id, writer=writer_lease_to_pb(writer),
        )  # fmt: skip
        if expected_version is not None:
            req.expected_version = expected_version
        resp = await self._call(
            lambda: self._stub.SetAlias(req, metadata=self._metadata(), timeout=self.timeout_s)
        )
        return _change_result(resp)

    async def delete_alias(
        self, name: str, alias: str, *, actor: str = "", reason: str = ""
    ) -> AliasChangeResult:
        """Remove ``alias`` from ``name``."""
        req = registry_pb2.DeleteAliasRequest(name=name, alias=alias, actor=actor, reason=reason)
        resp = await self._call(
            lambda: self._stub.DeleteAlias(req, metadata=self._metadata(), timeout=self.timeout_s)
        )
        return _change_result(resp)

    async def rollback(
        self,
        name: str,
        *,
        alias: str = "champion",
        as_of: datetime | None = None,
        actor: str = "",
        reason: str = "",
    ) -> AliasChangeResult:
        """Move ``alias`` back to its previous version, or to where it pointed at ``as_of``."""
        req = registry_pb2.RollbackRequest(name=name, alias=alias, actor=actor, reason=reason)
        if as_of is not None:
            req.as_of.CopyFrom(datetime_to_pb(as_of))
        resp = await self._call(
            lambda: self._stub.Rollback(req, metadata=self._metadata(), timeout=self.timeout_s)
        )
        return _change_result(resp)

    async def history(self, name: str, alias: str = "", limit: int = 0) -> list[AliasChange]:
        """Alias changes of ``name`` (of one alias when given), oldest first."""
        req = registry_pb2.GetAliasHistoryRequest(name=name, alias=alias, limit=limit)
        resp = await self._call(
            lambda: self._stub.GetAliasHistory(
                req, metadata=self._metadata(), timeout=self.timeout_s
            )
        )
        return [alias_change_from_pb(c) for c in resp.changes]


def _change_result(resp: registry_pb2.AliasChangeResponse) -> AliasChangeResult:
    version = version_from_pb(resp.model_version) if resp.HasField("model_version") else None
    return alias_change_from_pb(resp.change), version


def new_idempotency_key() -> str:
    """A fresh random idempotency key (for callers that retry uploads themselves)."""
    return uuid.uuid4().hex
