"""Where model versions come from: the interface, and the Registry gRPC implementation.

:class:`RegistryModelSource` streams the artifact from ``driftline.v1.Registry``,
verifies its digest and HMAC signature (``driftline.artifacts.load_model``)
before unpickling, and takes the input schema from the version's recorded spec
and the feature store's declared types.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import logging
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import json_format

from driftline.artifacts import load_model
from driftline.contracts.errors import (
    DriftlineError,
    FailedPreconditionError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from driftline.serving.feature_source import FeatureSource
from driftline.serving.loaded_model import LoadedModel, featureset_of_spec
from driftline.v1 import registry_pb2, registry_pb2_grpc

__all__ = ["MODEL_MODULES", "ModelSource", "RegistryModelSource", "import_model_modules"]

log = logging.getLogger(__name__)

MODEL_MODULES: tuple[str, ...] = (
    "river.compose",
    "river.preprocessing",
    "river.tree",
    "river.forest",
    "river.linear_model",
    "river.naive_bayes",
    "river.drift",
    "river.optim",
)
"""The River packages the model-spec allow-list draws on: what unpickling an artifact
imports.  ``river.tree`` alone pulls in scipy; on a loaded two-core machine that took
20-40 s, which the first promotion paid while serving answered UNAVAILABLE."""

_REFUSALS: dict[grpc.StatusCode, type[DriftlineError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.DATA_LOSS: IntegrityError,
}
"""Registry answers about the request itself; any other failure is the registry's
(:class:`UnavailableError`, retried)."""


def import_model_modules(modules: tuple[str, ...] = MODEL_MODULES) -> list[str]:
    """Import ``modules`` (blocking; call it in a thread); returns those that failed."""
    failed: list[str] = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            # Only models using that package are affected; their load reports it.
            log.warning("cannot pre-import %s (models using it will fail to load): %s", name, exc)
            failed.append(name)
    return failed


class ModelSource(abc.ABC):
    """Resolves aliases and loads model versions."""

    @abc.abstractmethod
    async def list_models(self) -> dict[str, dict[str, int]]:
        """Every registered model name with its aliases (alias -> version)."""

    @abc.abstractmethod
    async def load(
        self, name: str, *, alias: str | None = None, version: int | None = None
    ) -> LoadedModel:
        """The verified, deserialized version (by alias or number).

        Raises :class:`NotFoundError` when the model, alias or version does not
        exist, :class:`IntegrityError` for a tampered or unsigned artifact,
        :class:`UnavailableError` when the registry cannot be reached.
        """

    async def warm_up(self) -> None:  # noqa: B027 - a no-op unless a source needs one
        """Pay one-off start-up costs of loading (imports) before the first promotion."""


class RegistryModelSource(ModelSource):
    """The registry over a channel the caller owns."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        signing_key: str,
        features: FeatureSource,
        *,
        target: str = "",
        timeout_s: float = 30.0,
    ) -> None:
        self._stub = registry_pb2_grpc.RegistryStub(channel)
        self._key = signing_key
        self._features = features
        self._target = target
        self._timeout_s = timeout_s

    async def warm_up(self) -> None:
        """Import the model libraries in a thread, so that the first load is as quick as
        the later ones."""
        await asyncio.to_thread(import_model_modules)

    async def list_models(self) -> dict[str, dict[str, int]]:
        try:
            response = await self._stub.ListModels(
                registry_pb2.ListModelsRequest(), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc, "listing models") from exc
        return {m.name: dict(m.aliases) for m in response.models}

    async def load(
        self, name: str, *, alias: str | None = None, version: int | None = None
    ) -> LoadedModel:
        request = registry_pb2.DownloadArtifactRequest(name=name)
        if version is not None:
            request.version = version
        elif alias is not None:
            request.alias = alias
        what = f"model {name!r} " + (
            f"v{version}" if version is not None else f"alias {alias!r}" if alias else "latest"
        )
        metadata: registry_pb2.ArtifactMetadata | None = None
        chunks: list[bytes] = []
        try:
            async for message in self._stub.DownloadArtifact(request, timeout=self._timeout_s):
                if message.HasField("metadata"):
                    metadata = message.metadata
                else:
                    chunks.append(message.chunk)
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc, f"downloading {what}") from exc
        if metadata is None:
            raise UnavailableError(
                f"registry at {self._target} sent no metadata for {what}; cannot verify it"
            )
        data = b"".join(chunks)
        mv = metadata.model_version
        spec: dict[str, Any] = json_format.MessageToDict(mv.spec)
        # Verify then unpickle off the event loop: a large artifact must not stall RPCs.
        pipeline = await asyncio.to_thread(
            load_model,
            data,
            metadata.sha256 or mv.sha256,
            metadata.signature or mv.signature,
            self._key,
        )
        featureset = featureset_of_spec(spec) or mv.lineage.featureset
        if not featureset:
            raise FailedPreconditionError(
                f"{what} (v{mv.version}) records no feature set in its spec or lineage; "
                "serving cannot fetch its online features"
            )
        types = await self._features.feature_types(featureset)
        return LoadedModel.build(
            mv.name or name,
            mv.version,
            pipeline,
            spec=spec,
            feature_types=types,
            sha256=metadata.sha256 or mv.sha256,
            featureset=featureset,
        )

    def _translate(self, exc: grpc.aio.AioRpcError, doing: str) -> DriftlineError:
        # What the request itself got wrong is not retried: asking again gets the same
        # answer (a promotion naming version -1 must not hold the follower forever).
        refused = _REFUSALS.get(exc.code())
        if refused is not None:
            return refused(f"registry: {exc.details()}")
        return UnavailableError(
            f"registry at {self._target} failed {doing} ({exc.code().name}: {exc.details()})"
        )


def aliases_of(summary: Mapping[str, int], followed: tuple[str, ...]) -> dict[str, int]:
    """The followed aliases of a model summary."""
    return {a: v for a, v in summary.items() if a in followed}
