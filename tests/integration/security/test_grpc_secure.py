"""Secure mode's gRPC links over real sockets: mutual TLS on the feature store, the registry
and serving (built by the same functions the services start them with), the registry's
roles and serving's API keys, and tritonclient over TLS with its key as a header.

No broker is needed: the registry's core writes to an in-memory log and serving reads
in-memory sources, so only the gRPC edge — what this file is about — is on the wire.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health
from river import tree
from river.datasets import synth

from driftline.artifacts import ArtifactStore
from driftline.contracts.errors import PermissionDeniedError, UnauthenticatedError
from driftline.contracts.messages import RegistryEvent
from driftline.devtools.infra.pki import (
    DEFAULT_IDENTITIES,
    issue,
    load_ca,
    new_ca,
    write_credentials,
    write_identity,
)
from driftline.features.grpc_server import start_grpc_server as start_features
from driftline.features.lookup import OnlineFeatureLookup
from driftline.features.metrics import FeaturesMetrics
from driftline.online_store import InMemoryOnlineStore
from driftline.registry.core import RegistryCore
from driftline.registry.service import start_grpc_server as start_registry
from driftline.registry_client import RegistryClient
from driftline.security import grpc_tls
from driftline.security.auth_files import write_auth_files
from driftline.security.roles import token_digest
from driftline.serving.core import ServingCore
from driftline.serving.grpc_server import ServingServer, api_key_guard
from driftline.serving.loaded_model import FeatureDatatype, LoadedModel
from driftline.serving.memory_sources import InMemoryFeatureSource, InMemoryModelSource
from driftline.serving.model_table import ModelTable
from driftline.serving.prediction_log import PredictionLog
from driftline.serving.serving_metrics import ServingMetrics
from driftline.settings import PlatformSettings, SecuritySettings
from driftline.specs import FeatureSetCatalog, FeatureSetSpec
from driftline.telemetry import ServiceMetrics
from driftline.v1 import (
    feature_store_pb2,
    feature_store_pb2_grpc,
    predictor_pb2,
    predictor_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

pytestmark = pytest.mark.integration

MODEL = "loans-risk"
TYPES: dict[str, FeatureDatatype] = {
    "salary": "FP64",
    "commission": "FP64",
    "age": "INT64",
    "elevel": "INT64",
    "car": "INT64",
    "zipcode": "INT64",
    "hvalue": "FP64",
    "hyears": "INT64",
    "loan": "FP64",
}
FEATURESET = FeatureSetSpec(
    name="loans",
    version=1,
    entity="customer",
    fields={n: {"type": "float" if t == "FP64" else "int"} for n, t in TYPES.items()},
)
# Tokens of the registry's roles file in this module (the file holds their digests).
TOKENS = {"dashboards": "reader-tok-1", "trainer-bot": "trainer-tok-2", "release": "prom-tok-3"}


@dataclass(frozen=True)
class Pki:
    """The platform's credentials and the ones that must be refused."""

    root: Path
    """The platform's credentials directory (every identity, ``stranger`` too)."""
    other_ca: Path
    """``admin`` with a certificate of another CA (trusting the platform's CA)."""
    expired: Path
    """``admin`` with a platform certificate that expired yesterday."""

    def security(self, identity: str, root: Path | None = None) -> SecuritySettings:
        return SecuritySettings(enabled=True, credentials_dir=root or self.root, identity=identity)

    def secret(self, identity: str, name: str) -> str:
        return (self.root / identity / name).read_text().strip()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("credentials")
    write_credentials(root, (*DEFAULT_IDENTITIES, "stranger"))
    write_auth_files(root)
    ca = load_ca(root)
    other_ca, expired = tmp_path_factory.mktemp("other-ca"), tmp_path_factory.mktemp("expired")
    for where in (other_ca, expired):
        (where / "ca.crt").write_bytes(ca.cert_pem())
    stranger = new_ca("Not Driftline's CA")
    write_identity(other_ca / "admin", stranger, *issue(stranger, "admin"), secrets_too=False)
    now = dt.datetime.now(dt.UTC)
    old = issue(
        ca, "admin", not_before=now - dt.timedelta(days=2), not_after=now - dt.timedelta(days=1)
    )
    write_identity(expired / "admin", ca, *old, secrets_too=False)
    return Pki(root, other_ca, expired)


# -- the three servers ------------------------------------------------------------------


class LoopbackLog:
    """The registry's log in memory: each event comes back to the core a loop turn later."""

    def __init__(self) -> None:
        self.core: RegistryCore | None = None

    async def publish(self, event: RegistryEvent) -> None:
        assert self.core is not None
        asyncio.get_running_loop().call_soon(self.core.on_event, event)


@pytest.fixture(scope="module")
def trained() -> Any:
    model = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in synth.Agrawal(classification_function=0, seed=1).take(1000):
        model.learn_one(x, y)
    return model


@dataclass
class Servers:
    features: str
    registry: str
    serving: str


@pytest.fixture
async def servers(pki: Pki, trained: Any, tmp_path: Path) -> AsyncIterator[Servers]:
    """Features, registry and serving in secure mode on free loopback ports."""
    roles = tmp_path / "roles.yaml"
    roles.write_text(
        "admin: {identities: [admin]}\n"
        f"trainer: {{identities: [training], tokens: {{trainer-bot: "
        f"{token_digest(TOKENS['trainer-bot'])}}}}}\n"
        f"promoter: {{tokens: {{release: {token_digest(TOKENS['release'])}}}}}\n"
        f"reader: {{identities: [client], tokens: {{dashboards: "
        f"{token_digest(TOKENS['dashboards'])}}}}}\n"
    )
    settings = PlatformSettings(
        security=SecuritySettings(enabled=True, credentials_dir=pki.root),
        registry={"grpc_port": 0, "roles_file": str(roles), "signing_key": "k"},
    )
    started: list[grpc.aio.Server] = []
    try:
        lookup = OnlineFeatureLookup(FeatureSetCatalog([FEATURESET]), InMemoryOnlineStore())
        fs, fs_port = await start_features(
            lookup, FeaturesMetrics(), "127.0.0.1", 0, settings.security
        )
        started.append(fs)

        log = LoopbackLog()
        core = RegistryCore(ArtifactStore(str(tmp_path / "artifacts")), "k", log.publish)
        core.caught_up = True
        log.core = core
        reg, reg_port = await start_registry(
            core,
            ServiceMetrics("registry"),
            settings,
            health.aio.HealthServicer(),  # type: ignore[attr-defined]
        )
        started.append(reg)

        models = InMemoryModelSource()
        spec = {"featureset": "loans", "features": list(TYPES), "task": "binary"}
        models.add(LoadedModel.build(MODEL, 1, trained, spec=spec, feature_types=TYPES), "champion")
        table = ModelTable(models)
        await table.sync()
        serving_core = ServingCore(
            table, InMemoryFeatureSource({"loans": TYPES}), PredictionLog(10_000)
        )
        server = ServingServer(
            serving_core,
            ServingMetrics(ServiceMetrics("serving")),
            security=settings.security,
            keys=api_key_guard(settings),
        )
        serving_port = server.bind("127.0.0.1", 0)
        await server.start()
        started.append(server.server)
        yield Servers(f"127.0.0.1:{fs_port}", f"127.0.0.1:{reg_port}", f"127.0.0.1:{serving_port}")
    finally:
        for s in started:
            await s.stop(0)


# -- who is refused by every server -----------------------------------------------------


async def _call(server: str, target: str, chan: grpc.aio.Channel) -> None:
    """One cheap call of ``server``'s own API (serving: as admin, which needs no key)."""
    if server == "features":
        stub: Any = feature_store_pb2_grpc.FeatureStoreStub(chan)
        await stub.ListFeatureSets(feature_store_pb2.ListFeatureSetsRequest(), timeout=10)
    elif server == "registry":
        stub = registry_pb2_grpc.RegistryStub(chan)
        await stub.ListModels(registry_pb2.ListModelsRequest(), timeout=10)
    else:
        stub = predictor_pb2_grpc.PredictorStub(chan)
        await stub.GetCanary(predictor_pb2.GetCanaryRequest(model_name=MODEL), timeout=10)


SERVERS = ("features", "registry", "serving")


@pytest.mark.parametrize("server", SERVERS)
async def test_the_platforms_admin_certificate_is_served(
    servers: Servers, pki: Pki, server: str
) -> None:
    target = getattr(servers, server)
    async with grpc_tls.channel(target, pki.security("admin"), "admin") as chan:
        await _call(server, target, chan)


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("caller", ["plaintext", "other CA", "expired"])
async def test_a_caller_without_a_valid_platform_certificate_is_refused(
    servers: Servers, pki: Pki, server: str, caller: str
) -> None:
    target = getattr(servers, server)
    security = {
        "plaintext": None,
        "other CA": pki.security("admin", pki.other_ca),
        "expired": pki.security("admin", pki.expired),
    }[caller]
    async with grpc_tls.channel(target, security, "admin") as chan:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _call(server, target, chan)
    # The handshake fails: no handler ran, so no application status came back.
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()


# -- the registry's roles ---------------------------------------------------------------


def _client(servers: Servers, pki: Pki, identity: str, token: str | None = None) -> RegistryClient:
    return RegistryClient(
        servers.registry, token=token, security=pki.security(identity), identity=identity
    )


async def test_registry_roles_by_certificate_and_token(servers: Servers, pki: Pki) -> None:
    async with (
        _client(servers, pki, "training") as trainer,
        _client(servers, pki, "client") as reader,
        _client(servers, pki, "admin", TOKENS["dashboards"]) as reader_token,
        _client(servers, pki, "client", TOKENS["release"]) as promoter,
        _client(servers, pki, "stranger") as stranger,
        _client(servers, pki, "admin") as admin,
    ):
        # The trainer certificate registers; promoting needs the promoter role.
        v1 = await trainer.register(MODEL, b"model-1")
        with pytest.raises(PermissionDeniedError, match="SetAlias needs the promoter role; "
                           "certificate 'training' has trainer"):  # fmt: skip
            await trainer.set_alias(MODEL, "champion", v1.version)
        # A reader token overrides the admin certificate it comes with: refused, named.
        with pytest.raises(PermissionDeniedError) as denied:
            await reader_token.set_alias(MODEL, "champion", v1.version)
        assert "SetAlias needs the promoter role; token 'dashboards' has reader" in str(
            denied.value
        )
        assert TOKENS["dashboards"] not in str(denied.value)
        # The promoter token promotes, but does not register.
        await promoter.set_alias(MODEL, "champion", v1.version, reason="test")
        with pytest.raises(PermissionDeniedError, match="needs the trainer role"):
            await promoter.register(MODEL, b"model-2")
        # A reader certificate reads; a certificate bound to no role, with no token, is
        # unauthenticated, for reads too.
        assert (await reader.get(MODEL, alias="champion")).version == v1.version
        with pytest.raises(UnauthenticatedError, match="'stranger' is bound to no role"):
            await stranger.list_models()
        with pytest.raises(UnauthenticatedError, match="needs the promoter role"):
            await stranger.set_alias(MODEL, "champion", v1.version)
        # An unknown token is unauthenticated, whatever the certificate.
        async with _client(servers, pki, "admin", "not-a-token") as unknown:
            with pytest.raises(UnauthenticatedError, match="bound to no role"):
                await unknown.list_models()
        # The admin certificate does everything.
        v2 = await admin.register(MODEL, b"model-3")
        await admin.set_alias(MODEL, "champion", v2.version, reason="test")


# -- serving's API keys -----------------------------------------------------------------


def _predict(entity: str) -> predictor_pb2.PredictRequest:
    return predictor_pb2.PredictRequest(entity_id=entity, model_name=MODEL)


async def test_serving_needs_an_api_key_from_a_public_caller(servers: Servers, pki: Pki) -> None:
    key = pki.secret("client", "api.key")
    async with grpc_tls.channel(servers.serving, pki.security("client"), "client") as chan:
        stub = predictor_pb2_grpc.PredictorStub(chan)
        for metadata in ((), (("x-api-key", "wrong-key"),)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Predict(_predict("e1"), metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "x-api-key" in (refused.value.details() or "")
            assert "wrong-key" not in (refused.value.details() or "")
        answer = await stub.Predict(_predict("e1"), metadata=(("x-api-key", key),), timeout=10)
        assert answer.model_name == MODEL and answer.model_version == 1
        batch = predictor_pb2.PredictBatchRequest(requests=[_predict("e2"), _predict("e3")])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PredictBatch(batch, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert len((await stub.PredictBatch(batch, metadata=(("x-api-key", key),))).responses) == 2
        # A key allows predictions, not changing the canary.
        canary = predictor_pb2.SetCanaryRequest(model_name=MODEL, percent=10, alias="challenger")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SetCanary(canary, metadata=(("x-api-key", key),), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A Driftline service's certificate needs no key.
    async with grpc_tls.channel(servers.serving, pki.security("monitoring"), "x") as chan:
        answer = await predictor_pb2_grpc.PredictorStub(chan).Predict(_predict("e4"), timeout=10)
        assert answer.model_version == 1


TRITON_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

args = json.load(sys.stdin)
client = tc.InferenceServerClient(
    args["url"], ssl=True, root_certificates=args["ca"], private_key=args["key"],
    certificate_chain=args["cert"],
)
out = {}
try:
    client.get_model_metadata(args["model"], as_json=True)
except InferenceServerException as exc:
    out["without_key"] = exc.status()
headers = {"x-api-key": args["api_key"]}
meta = client.get_model_metadata(args["model"], as_json=True, headers=headers)
inputs = []
for spec in meta["inputs"]:
    dtype = np.float64 if spec["datatype"] == "FP64" else np.int64
    tensor = tc.InferInput(spec["name"], [2, 1], spec["datatype"])
    tensor.set_data_from_numpy(np.array([[1], [2]], dtype=dtype))
    inputs.append(tensor)
result = client.infer(args["model"], inputs, headers=headers)
out["predict"] = [p.decode() for p in result.as_numpy("predict").tolist()]
out["version"] = result.get_response().model_version
print(json.dumps(out))
"""


async def test_tritonclient_over_tls_with_its_key_as_a_header(servers: Servers, pki: Pki) -> None:
    # tritonclient's protobuf modules clash with ours (both define `inference.*`).
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TRITON_SCRIPT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    client = pki.root / "client"
    payload = {
        "url": servers.serving,
        "model": MODEL,
        "ca": str(pki.root / "ca.crt"),
        "key": str(client / "tls.key"),
        "cert": str(client / "tls.crt"),
        "api_key": pki.secret("client", "api.key"),
    }
    stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(payload).encode()), 120)
    assert proc.returncode == 0, stderr.decode()
    out = json.loads(stdout)
    assert out["without_key"] == "StatusCode.UNAUTHENTICATED"
    assert out["version"] == "1" and len(out["predict"]) == 2


def test_no_secret_is_in_the_written_auth_files(pki: Pki) -> None:
    files = (pki.root / "registry" / "roles.yaml", pki.root / "serving" / "api-keys.sha256")
    text = "".join(p.read_text() for p in files)
    for identity in DEFAULT_IDENTITIES:
        assert pki.secret(identity, "token") not in text
        assert pki.secret(identity, "api.key") not in text
        assert token_digest(pki.secret(identity, "api.key")) in text
