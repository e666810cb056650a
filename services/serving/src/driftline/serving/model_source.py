"""Where model versions come from: the interface, and the Registry gRPC implementation.

:class:`RegistryModelSource` streams the artifact from ``driftline.v1.Registry``,
verifies its digest and HMAC signature (``driftline.artifacts.verify``) before
anything deserialises it, and loads it with the runtime of the framework the
registry recorded for the version (:func:`load_version`; River for versions
recorded before frameworks). The input signature comes from the version's
recorded spec and the feature store's declared types.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import importlib
import logging
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import json_format

from driftline.artifacts import verify
from driftline.contracts.errors import DriftlineError, FailedPreconditionError, UnavailableError
from driftline.edge.errors import RpcErrors
from driftline.model_runtimes import ModelRuntime, load_runtime, runtime_for
from driftline.serving.feature_source import FeatureSource
from driftline.serving.loaded_model import (
    FeatureDatatype,
    LoadedModel,
    classes_of_spec,
    featureset_of_spec,
    settle_task,
    signature_of_spec,
    task_of_spec,
)
from driftline.v1 import registry_pb2, registry_pb2_grpc

__all__ = [
    "MODEL_MODULES",
    "ModelSource",
    "RegistryModelSource",
    "import_model_modules",
    "limit_model_threads",
    "load_version",
]

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
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "skl2onnx",
    "onnxruntime",
)
"""The River packages the model-spec allow-list draws on, and scikit-learn's common
estimators: what unpickling an artifact imports; skl2onnx and onnxruntime, which
compiling a scikit-learn model's single-row path imports (0.6 s the first time).
``river.tree`` alone pulls in scipy; on a loaded two-core machine that took 20-40 s,
which the first promotion paid while serving answered UNAVAILABLE.  LightGBM and
XGBoost (0.4 and 1.8 s) are imported by the first version of theirs, which serving
loads when its registration is read on ``driftline.models``, before it is promoted."""

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_model_threads(threads: int) -> dict[str, int]:
    """Let models' native code (OpenMP, BLAS) use at most ``threads`` threads per call.

    Libraries already loaded (numpy's BLAS, scikit-learn's OpenMP) are limited through
    ``threadpoolctl``; the environment variables cover those loaded later (LightGBM's
    and XGBoost's OpenMP read them when they start).  Returns ``{library: threads}`` as
    ``threadpoolctl`` then reports them.  See ``ServingSettings.model_threads`` for why.
    """
    import os

    from threadpoolctl import threadpool_info, threadpool_limits

    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    threadpool_limits(limits=threads)
    return {f"{i['internal_api']}:{i['filepath']}": i["num_threads"] for i in threadpool_info()}


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


def load_version(
    what: str,
    framework: str,
    artifact_format: str,
    data: bytes,
    spec: Mapping[str, Any],
    feature_types: Mapping[str, FeatureDatatype],
    *,
    compile_model: bool = True,
) -> ModelRuntime:
    """The runtime of a version's *verified* artifact bytes (blocking: call it in a thread).

    ``framework`` picks the runtime (never the bytes); an empty ``artifact_format``
    is the runtime's first format. The signature is the spec's features typed as
    the feature set declares them, with the spec's task; a River spec without a
    task is settled by the model's class, as before frameworks. Raises
    :class:`FailedPreconditionError` naming ``what`` and the problem: an unknown
    framework, a format its runtime does not read, an artifact it cannot load, a
    ``python_class`` that does not import, a spec without the task or features it needs.

    With ``compile_model``, the runtime then prepares its faster single-row path
    (:meth:`ModelRuntime.compile`; never fails the load) and the outcome is logged.
    """
    task = task_of_spec(spec)
    classes = classes_of_spec(spec)
    if classes is not None:
        spec = {**spec, "classes": classes}
    try:
        if task is None and framework != "river":
            raise FailedPreconditionError(
                f"its spec declares no task; a {framework} model's spec must say binary, "
                "multiclass or regression"
            )
        signature = signature_of_spec(what, spec, feature_types, task=task or "regression")
        runtime_format = artifact_format or runtime_for(framework).formats[0]
        runtime = load_runtime(framework, runtime_format, data, signature, spec)
    except DriftlineError as exc:
        if exc.message.startswith(f"model {what}"):
            raise
        raise type(exc)(f"model {what} ({framework}): {exc.message}") from exc
    except Exception as exc:
        # Past verification, whatever goes wrong is the artifact's (or its class's):
        # one clear refusal rather than a traceback that reads like serving's bug.
        raise FailedPreconditionError(
            f"model {what} ({framework}): the artifact does not load: {type(exc).__name__}: {exc}"
        ) from exc
    runtime = settle_task(runtime) if task is None else runtime
    if compile_model:
        try:
            outcome = runtime.compile()
        except Exception as exc:  # a runtime's own bug: serve the model uncompiled
            log.warning("model %s (%s): compiling failed, serving it uncompiled", what, framework,
                        exc_info=exc)  # fmt: skip
        else:
            if outcome is not None:
                log.info("model %s (%s): %s", what, framework, outcome)
    return runtime


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
        :class:`FailedPreconditionError` for a version its framework's runtime
        cannot load (see :func:`load_version`), :class:`UnavailableError` when the
        registry cannot be reached.
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
        compile_models: bool = True,
    ) -> None:
        self._stub = registry_pb2_grpc.RegistryStub(channel)
        self._compile = compile_models
        self._key = signing_key
        self._features = features
        self._target = target
        self._timeout_s = timeout_s
        # What the registry answers about the request itself is not retried: asking
        # again gets the same answer (a promotion naming version -1 must not hold the
        # follower forever). Any other failure is the registry's (UnavailableError,
        # retried).
        self._errors = RpcErrors("registry", target)

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
            raise self._errors.of_rpc(exc, doing="listing models") from exc
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
            raise self._errors.of_rpc(exc, doing=f"downloading {what}") from exc
        if metadata is None:
            raise UnavailableError(
                f"registry at {self._target} sent no metadata for {what}; cannot verify it"
            )
        data = b"".join(chunks)
        mv = metadata.model_version
        spec: dict[str, Any] = json_format.MessageToDict(mv.spec)
        sha256 = metadata.sha256 or mv.sha256
        # The digest and signature are checked before anything reads the bytes: a pickle
        # runs code as it loads, so a tampered or unsigned artifact must never get that far.
        await asyncio.to_thread(verify, data, sha256, metadata.signature or mv.signature, self._key)
        what = f"{mv.name or name!r} v{mv.version}"
        featureset = featureset_of_spec(spec) or mv.lineage.featureset
        if not featureset:
            raise FailedPreconditionError(
                f"model {what} records no feature set in its spec or lineage; "
                "serving cannot fetch its online features"
            )
        types = await self._features.feature_types(featureset)
        framework = mv.framework or "river"  # versions recorded before frameworks are River's
        artifact_format = metadata.artifact_format or mv.artifact_format
        # Deserialising a large artifact must not stall RPCs: off the event loop.
        runtime = await asyncio.to_thread(
            functools.partial(
                load_version, what, framework, artifact_format, data, spec, types,
                compile_model=self._compile,
            )
        )  # fmt: skip
        return LoadedModel.of_runtime(
            mv.name or name,
            mv.version,
            runtime,
            featureset=featureset,
            sha256=sha256,
            artifact_format=artifact_format or runtime.formats[0],
        )


def aliases_of(summary: Mapping[str, int], followed: tuple[str, ...]) -> dict[str, int]:
    """The followed aliases of a model summary."""
    return {a: v for a, v in summary.items() if a in followed}
