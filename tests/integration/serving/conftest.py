"""Serving over real sockets: the real Kafka broker, and small real gRPC peers.

The registry and the feature store are played by small ``grpc.aio`` servers
started here on free loopback ports; they implement the real protos
(``driftline.v1.Registry``: ListModels, GetVersion, DownloadArtifact;
``driftline.v1.FeatureStore``: GetOnlineFeatures, ListFeatureSets), so serving
talks to them exactly as it talks to the real services. Promotions are real
``RegistryEvent`` records on the broker's ``driftline.models``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from river import tree
from river.datasets import synth

from driftline.artifacts import digest, dump_model, sign
from driftline.contracts.messages import RegistryEvent, RegistryEventKind, utcnow
from driftline.contracts.topics import MODELS
from driftline.devtools.infra import free_port
from driftline.features.columns import online_features_response
from driftline.features.grpc_server import answer_read_stream
from driftline.features.lookup import LookupResult
from driftline.kafkaio import make_producer, send_model
from driftline.online_store import FeatureRead, FeatureStatus
from driftline.serving.service import serve
from driftline.settings import PlatformSettings
from driftline.specs import FeatureSetSpec
from driftline.v1 import (
    feature_store_pb2,
    feature_store_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

SIGNING_KEY = "serving-test-key"
MODEL = "loans-risk"
LOAN_TYPES = {
    "salary": feature_store_pb2.FEATURE_TYPE_DOUBLE,
    "commission": feature_store_pb2.FEATURE_TYPE_DOUBLE,
    "age": feature_store_pb2.FEATURE_TYPE_INT64,
    "elevel": feature_store_pb2.FEATURE_TYPE_INT64,
    "car": feature_store_pb2.FEATURE_TYPE_INT64,
    "zipcode": feature_store_pb2.FEATURE_TYPE_INT64,
    "hvalue": feature_store_pb2.FEATURE_TYPE_DOUBLE,
    "hyears": feature_store_pb2.FEATURE_TYPE_INT64,
    "loan": feature_store_pb2.FEATURE_TYPE_DOUBLE,
}
SPEC = {"name": MODEL, "featureset": "loans", "task": "binary", "features": list(LOAN_TYPES)}
LOANS = FeatureSetSpec(
    name="loans",
    version=1,
    entity="customer",
    fields={
        n: {"type": "float" if t == feature_store_pb2.FEATURE_TYPE_DOUBLE else "int"}
        for n, t in LOAN_TYPES.items()
    },
)
"""The stand-in feature store's feature set."""


def trained_tree(function: int, flip: bool = False, n: int = 2000) -> Any:
    """A Hoeffding tree trained on ``n`` Agrawal rows of classification ``function``."""
    model = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in synth.Agrawal(classification_function=function, seed=function + 1).take(n):
        model.learn_one(x, (1 - y) if flip else y)
    return model


def agrawal_rows(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """``n`` feature rows of the loans feature set."""
    return [x for x, _ in synth.Agrawal(seed=seed).take(n)]


class StandInRegistry(registry_pb2_grpc.RegistryServicer):
    """Signed artifacts and aliases, served as the Registry proto says."""

    def __init__(self) -> None:
        self.artifacts: dict[int, tuple[bytes, str, str]] = {}
        self.aliases: dict[str, int] = {}
        self.kinds: dict[int, tuple[str, str, dict[str, Any]]] = {}
        """Per version: ``(framework, artifact_format, spec)`` (default: River's, SPEC)."""

    def add(
        self,
        version: int,
        pipeline: Any = None,
        *,
        signature: str | None = None,
        data: bytes | None = None,
        framework: str = "",
        artifact_format: str = "river-pickle",
        spec: dict[str, Any] | None = None,
    ) -> None:
        """A version of ``pipeline`` pickled (or of ``data`` as given), signed unless
        ``signature`` says otherwise; an empty ``framework`` is what registries recorded
        before frameworks (serving reads it as River)."""
        data = dump_model(pipeline) if data is None else data
        self.artifacts[version] = (data, digest(data), signature or sign(data, SIGNING_KEY))
        self.kinds[version] = (framework, artifact_format, spec or SPEC)

    def _version(self, version: int) -> registry_pb2.ModelVersion:
        data, sha, sig = self.artifacts[version]
        framework, artifact_format, user_spec = self.kinds.get(version, ("", "river-pickle", SPEC))
        spec = Struct()
        spec.update(user_spec)
        return registry_pb2.ModelVersion(
            name=MODEL,
            version=version,
            sha256=sha,
            signature=sig,
            spec=spec,
            artifact_format=artifact_format,
            size_bytes=len(data),
            aliases=[a for a, v in self.aliases.items() if v == version],
            framework=framework,
        )

    def _select(self, request: Any) -> int | None:
        which = request.WhichOneof("selector")
        if request.name != MODEL:
            return None
        if which == "version":
            return int(request.version) if request.version in self.artifacts else None
        if which == "alias":
            return self.aliases.get(request.alias)
        return max(self.artifacts) if self.artifacts else None

    async def ListModels(self, request: Any, context: Any) -> registry_pb2.ListModelsResponse:
        latest = max(self.artifacts) if self.artifacts else 0
        return registry_pb2.ListModelsResponse(
            models=[
                registry_pb2.ModelSummary(name=MODEL, latest_version=latest, aliases=self.aliases)
            ]
        )

    async def GetVersion(self, request: Any, context: Any) -> registry_pb2.ModelVersion:
        version = self._select(request)
        if version is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such version of {request.name}")
        return self._version(version)  # type: ignore[arg-type]

    async def DownloadArtifact(self, request: Any, context: Any) -> AsyncIterator[Any]:
        version = self._select(request)
        if version is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such version of {request.name}")
            return
        data, sha, sig = self.artifacts[version]
        yield registry_pb2.DownloadArtifactResponse(
            metadata=registry_pb2.ArtifactMetadata(
                model_version=self._version(version),
                size_bytes=len(data),
                sha256=sha,
                signature=sig,
                signature_algorithm="hmac-sha256",
                artifact_format=self._version(version).artifact_format,
            )
        )
        for i in range(0, len(data), 64 * 1024):
            yield registry_pb2.DownloadArtifactResponse(chunk=data[i : i + 64 * 1024])


class StandInFeatureStore(feature_store_pb2_grpc.FeatureStoreServicer):
    """The loans feature set with online values per entity (MISSING when not stored).

    Reads come as GetOnlineFeatures calls or on StreamOnlineFeatures, which is
    served by the features service's own stream handler; the answers are built
    as the features service builds them. Stored values are 1.5 s old.
    """

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self.streams = 0
        """StreamOnlineFeatures streams opened."""

    async def GetOnlineFeatures(self, request: Any, context: Any) -> Any:
        return self._response(request)

    async def StreamOnlineFeatures(self, request_iterator: Any, context: Any) -> None:
        self.streams += 1

        async def read(one: Any, into: Any) -> None:
            self._response(one.request, into)

        await answer_read_stream(request_iterator, context, read)

    def _response(self, request: Any, into: Any = None) -> Any:
        names = list(request.feature_names) or list(LOAN_TYPES)
        read_at = time.time()
        written_us = round(read_at * 1e6) - 1_500_000
        rows = []
        for entity in request.entity_ids:
            stored = self.values.get(entity, {})
            rows.append(
                [
                    FeatureRead(stored[n], written_us, FeatureStatus.PRESENT)
                    if n in stored
                    else FeatureRead(None, None, FeatureStatus.MISSING)
                    for n in names
                ]
            )
        return online_features_response(
            LookupResult(LOANS, names, list(request.entity_ids), rows, read_at), into
        )

    async def ListFeatureSets(self, request: Any, context: Any) -> Any:
        info = feature_store_pb2.FeatureSetInfo(name="loans", version=1, entity_key="customer")
        for n, t in LOAN_TYPES.items():
            info.features.add(name=n, type=t, kind="raw")
        return feature_store_pb2.ListFeatureSetsResponse(featuresets=[info])


@dataclass
class ServingStack:
    """Serving (in this process) with its stand-in peers and the real broker."""

    settings: PlatformSettings
    registry: StandInRegistry
    features: StandInFeatureStore
    target: str
    admin_url: str
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def promote(self, alias: str, version: int) -> None:
        """Point ``alias`` at ``version`` in the registry and announce it on driftline.models."""
        previous = self.registry.aliases.get(alias)
        self.registry.aliases[alias] = version
        producer = make_producer(self.settings.kafka, "serving-test-registry")
        await producer.start()
        try:
            event = RegistryEvent(
                event_id=uuid.uuid4().hex,
                kind=RegistryEventKind.ALIAS_SET,
                model_name=MODEL,
                version=version,
                alias=alias,
                previous_version=previous,
                actor="test",
                reason="integration test",
                at=utcnow(),
            )
            await (await send_model(producer, MODELS, MODEL, event))
        finally:
            await producer.stop()


async def _start_server(servicer: Any, add: Any) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def wait_until(predicate: Any, timeout_s: float = 30.0, what: str = "") -> None:
    """Poll ``predicate`` (sync or async) until true; fail naming ``what`` after the timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def serving_stack(platform_settings: PlatformSettings) -> AsyncIterator[ServingStack]:
    """Serving with champion v1 loaded (v2 registered, unaliased), ready to answer."""
    registry, features = StandInRegistry(), StandInFeatureStore()
    registry.add(1, trained_tree(0))
    registry.add(2, trained_tree(2, flip=True))
    registry.aliases["champion"] = 1
    reg_server, reg_port = await _start_server(
        registry, registry_pb2_grpc.add_RegistryServicer_to_server
    )
    fs_server, fs_port = await _start_server(
        features, feature_store_pb2_grpc.add_FeatureStoreServicer_to_server
    )
    grpc_port, admin_port = free_port(), free_port()
    settings = platform_settings.model_copy(
        update={
            "serving": platform_settings.serving.model_copy(
                update={
                    "grpc_port": grpc_port,
                    "admin": platform_settings.serving.admin.model_copy(
                        update={"port": admin_port}
                    ),
                    "features_target": f"127.0.0.1:{fs_port}",
                    "registry_target": f"127.0.0.1:{reg_port}",
                    "signing_key": SIGNING_KEY,
                    "prediction_log_batch": 200,
                    # The stand-in peers share this process's event loop with the load.
                    "feature_timeout_ms": 2000.0,
                }
            )
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    stack = ServingStack(
        settings, registry, features, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{admin_port}"
    )
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async with grpc.aio.insecure_channel(stack.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def serving_ok() -> bool:
                if task.done():
                    task.result()
                try:
                    r = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                except grpc.aio.AioRpcError:
                    return False
                return bool(r.status == health_pb2.HealthCheckResponse.SERVING)

            await wait_until(serving_ok, 60, "serving to load its champion")
        yield stack
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, 20)
        await reg_server.stop(0)
        await fs_server.stop(0)
