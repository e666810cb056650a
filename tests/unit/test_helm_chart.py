"""The Helm chart (infra/helm/driftline): linted, rendered and checked against Kubernetes.

Helm is the binary ``driftline infra fetch`` builds from the Go module proxy (built here
through the same code when missing). Every manifest rendered with the default values and
with ``ci/cluster-values.yaml`` (external Kafka and Redis, autoscaling on) is
validated against the Kubernetes JSON schemas ``kubernetes-validate`` ships (no network),
and the workloads are checked against docs/scaling.md and the services' settings: ports,
probes, replica counts, the environment each service reads.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from driftline.contracts.topics import EVENTS_VALID
from driftline.devtools.infra import MissingToolError, fetch_helm
from driftline.devtools.infra.helm_build import HELM_VERSION
from driftline.security import credentials_for
from driftline.settings import PlatformSettings, load_settings
from driftline.settings.models import SERVICE_NAMES
from driftline.specs import load_featuresets, load_model_specs

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "infra" / "helm" / "driftline"
CI_VALUES = CHART / "ci" / "cluster-values.yaml"
RELEASE = "prod"
NAMESPACE = "ml"
PREFIX = f"{RELEASE}-driftline"
KUBE_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
"""The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest whose
schemas kubernetes-validate ships."""
DEFAULTS = PlatformSettings()
STANDBYS = {"training": 3, "monitoring": 3}
"""Services with one active replica and standbys: the most replicas the chart allows."""


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The helm command, with its config, cache and data homes in a scratch directory."""
    binary = fetch_helm(progress=print)
    home = tmp_path_factory.mktemp("helm-home")
    env = {f"HELM_{d}_HOME": str(home / d.lower()) for d in ("CONFIG", "CACHE", "DATA")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield [str(binary)]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run(helm: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*helm, *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )


def render(helm: list[str], *values: Path, sets: Sequence[str] = ()) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    out = run(helm, *args)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def default_docs(helm: list[str]) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="module")
def cluster_docs(helm: list[str]) -> list[dict[str, Any]]:
    return render(helm, CI_VALUES)


@pytest.fixture(scope="module", params=["default", "cluster"])
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    rendered: list[dict[str, Any]] = request.getfixturevalue(f"{request.param}_docs")
    return rendered


def of_kind(docs: list[dict[str, Any]], *kinds: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in kinds}


def workload(docs: list[dict[str, Any]], service: str) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == service
    ]
    assert len(found) == 1, f"{service}: {len(found)} workloads"
    return found[0]


def container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def test_helm_lint_passes_with_the_default_and_the_cluster_values(helm: list[str]) -> None:
    for values in ([], ["-f", str(CI_VALUES)]):
        out = run(helm, "lint", "--strict", str(CHART), *values)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_every_manifest_is_valid_against_the_kubernetes_schemas(
    docs: list[dict[str, Any]],
) -> None:
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    for version in KUBE_VERSIONS:
        for doc in docs:
            # strict: a field Kubernetes does not know (a typo in a template) is an error too.
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_schemas_are_shipped_not_downloaded() -> None:
    assert kubernetes_validate.utils.latest_version() >= "1.29"
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"replicas": "two", "selector": {}, "template": {}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_each_service_has_a_workload_with_probes_on_its_admin_port(
    docs: list[dict[str, Any]], service: str
) -> None:
    doc = workload(docs, service)
    c = container(doc)
    assert c["args"] == ["run", service]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    section = getattr(DEFAULTS, service)
    assert ports["http"] == section.admin.port
    if hasattr(section, "grpc_port"):
        assert ports["grpc"] == section.grpc_port
    else:
        assert "grpc" not in ports
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(section.admin.port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert c["resources"]["requests"]["cpu"]
    # The Service in front of it exposes the same ports by name.
    svc = of_kind(docs, "Service")[f"{PREFIX}-{service}"]
    assert svc["spec"]["selector"] == doc["spec"]["selector"]["matchLabels"]
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == ports


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_each_service_has_a_disruption_budget_selecting_its_pods(
    docs: list[dict[str, Any]], service: str
) -> None:
    pdb = of_kind(docs, "PodDisruptionBudget")[f"{PREFIX}-{service}"]
    labels = workload(docs, service)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_workloads_follow_the_scaling_model(
    default_docs: list[dict[str, Any]], cluster_docs: list[dict[str, Any]]
) -> None:
    kinds = {s: workload(default_docs, s)["kind"] for s in SERVICE_NAMES}
    assert kinds == {
        "ingestion": "StatefulSet",  # stable instance ids: transactional ids that fence
        "features": "Deployment",
        "training": "StatefulSet",  # one active writer: stable names are its claims' holders
        "registry": "StatefulSet",
        "serving": "Deployment",
        "monitoring": "StatefulSet",
    }
    for service in STANDBYS:
        assert workload(default_docs, service)["spec"]["replicas"] == 1
        assert workload(cluster_docs, service)["spec"]["replicas"] == 2  # active + standby
    assert workload(default_docs, "registry")["spec"]["replicas"] == 1
    # Several registry replicas share one ReadWriteMany artifact volume.
    registry = workload(cluster_docs, "registry")
    assert registry["spec"]["replicas"] == 2
    volumes = {v["name"]: v for v in registry["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["artifacts"]["persistentVolumeClaim"]["claimName"]
    pvc = of_kind(cluster_docs, "PersistentVolumeClaim")[claim]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "volumeClaimTemplates" not in registry["spec"]
    # Every StatefulSet is governed by its headless Service.
    services = of_kind(default_docs, "Service")
    for service, kind in kinds.items():
        if kind == "StatefulSet":
            name = workload(default_docs, service)["spec"]["serviceName"]
            assert services[name]["spec"]["clusterIP"] == "None"
    assert services[f"{PREFIX}-serving-headless"]["spec"]["clusterIP"] == "None"


def test_hpas_target_serving_and_ingestion_when_autoscaling_is_on(
    default_docs: list[dict[str, Any]], cluster_docs: list[dict[str, Any]]
) -> None:
    assert not of_kind(default_docs, "HorizontalPodAutoscaler")
    hpas = of_kind(cluster_docs, "HorizontalPodAutoscaler")
    targets = {h["spec"]["scaleTargetRef"]["name"]: h for h in hpas.values()}
    assert set(targets) == {f"{PREFIX}-serving", f"{PREFIX}-ingestion"}
    ci = yaml.safe_load(CI_VALUES.read_text())
    for service in ("serving", "ingestion"):
        hpa = targets[f"{PREFIX}-{service}"]
        target = workload(cluster_docs, service)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["kind"] == target["kind"]
        assert "replicas" not in target["spec"]  # left to the autoscaler
        assert hpa["spec"]["minReplicas"] == ci[service]["autoscaling"]["minReplicas"]
        assert hpa["spec"]["maxReplicas"] == ci[service]["autoscaling"]["maxReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"


def _settings_of(
    docs: list[dict[str, Any]], service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[PlatformSettings, dict[str, str]]:
    """The settings the service's container would load: its environment, its driftline.yaml."""
    doc = workload(docs, service)
    secrets = {
        name: {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
        for name, d in of_kind(docs, "Secret").items()
    }
    config = tmp_path / f"{service}.yaml"
    config.write_text(of_kind(docs, "ConfigMap")[f"{PREFIX}-config"]["data"]["driftline.yaml"])
    env: dict[str, str] = {}
    for var in container(doc)["env"]:
        source = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = f"{doc['metadata']['name']}-0"
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            if ref["name"] not in secrets:  # an existing Secret, not rendered
                env[var["name"]] = f"<{ref['name']}/{ref['key']}>"
            elif ref["key"] in secrets[ref["name"]]:
                env[var["name"]] = secrets[ref["name"]][ref["key"]]
            else:
                assert ref.get("optional"), f"{service}: {ref} is in no Secret"
        else:
            raise AssertionError(f"{service}: unexpected variable {var}")
    assert env.pop("DRIFTLINE_CONFIG") == "/etc/driftline/config/driftline.yaml"
    for key in list(os.environ):
        if key.startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(config), env  # raises on any variable the settings do not know


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_the_environment_is_valid_settings_reaching_kafka_redis_and_peers(
    cluster_docs: list[dict[str, Any]],
    service: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ci = yaml.safe_load(CI_VALUES.read_text())
    settings, env = _settings_of(cluster_docs, service, tmp_path, monkeypatch)
    assert settings.kafka.bootstrap_servers == ci["kafka"]["bootstrapServers"]
    assert settings.kafka.default_replication_factor == ci["kafka"]["replicationFactor"]
    assert settings.monitoring.cooldown_s == ci["config"]["monitoring"]["cooldown_s"]
    assert settings.telemetry.otlp_endpoint == ci["telemetry"]["otlpEndpoint"]
    section = getattr(settings, service)
    assert section.admin.host == "0.0.0.0"
    assert section.admin.port == getattr(DEFAULTS, service).admin.port
    if hasattr(section, "grpc_host"):
        assert section.grpc_host == "0.0.0.0"
    if hasattr(section, "instance_id"):
        assert section.instance_id == f"{PREFIX}-{service}-0"
    if service in ("ingestion", "features"):  # the Redis users
        assert (settings.redis.host, settings.redis.port) == ("redis-master.redis.svc", 6379)
        assert settings.redis.cluster is ci["redis"]["cluster"] is True
    else:
        assert not any(k.startswith("DRIFTLINE_REDIS__") for k in env)
    services = of_kind(cluster_docs, "Service")

    def resolves(target: str, peer: str) -> None:
        host, port = target.split(":")
        ports = {p["name"]: p["port"] for p in services[host]["spec"]["ports"]}
        assert host == f"{PREFIX}-{peer}" and int(port) == ports["grpc"]

    secret = ci["secrets"]["existingSecret"]
    if service == "serving":
        resolves(settings.serving.features_target, "features")
        resolves(settings.serving.registry_target, "registry")
        assert settings.serving.signing_key == f"<{secret}/signing-key>"
    if service == "training":
        resolves(settings.training.registry_target, "registry")
        assert settings.training.registry_token == f"<{secret}/registry-token>"
        assert settings.registry.signing_key == f"<{secret}/signing-key>"
        assert str(settings.training.models_dir) == "/etc/driftline/models"
    if service == "registry":
        assert settings.registry.token == f"<{secret}/registry-token>"
        assert settings.registry.signing_key == f"<{secret}/signing-key>"
    if service == "ingestion":
        assert settings.ingestion.api_key == f"<{secret}/ingestion-api-key>"


def test_tokens_and_signing_key_are_generated_into_a_secret_by_default(
    default_docs: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = of_kind(default_docs, "Secret")[f"{PREFIX}-secrets"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {"registry-token", "signing-key"}  # no ingestion key: API open
    assert len(data["registry-token"]) >= 32 and len(data["signing-key"]) >= 32
    assert data["signing-key"] != DEFAULTS.registry.signing_key
    registry, _ = _settings_of(default_docs, "registry", tmp_path, monkeypatch)
    training, _ = _settings_of(default_docs, "training", tmp_path, monkeypatch)
    serving, _ = _settings_of(default_docs, "serving", tmp_path, monkeypatch)
    ingestion, _ = _settings_of(default_docs, "ingestion", tmp_path, monkeypatch)
    assert registry.registry.token == training.training.registry_token == data["registry-token"]
    key = data["signing-key"]
    assert registry.registry.signing_key == training.registry.signing_key == key
    assert serving.serving.signing_key == key
    assert ingestion.ingestion.api_key is None


def test_an_existing_secret_replaces_the_generated_one(cluster_docs: list[dict[str, Any]]) -> None:
    assert not of_kind(cluster_docs, "Secret")


def _spec_dir(docs: list[dict[str, Any]], name: str, tmp_path: Path) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    for file, text in of_kind(docs, "ConfigMap")[f"{PREFIX}-{name}"]["data"].items():
        (directory / file).write_text(text)
    return directory


def test_spec_configmaps_hold_the_examples_by_default(
    default_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    for name in ("featuresets", "models"):
        shipped = {p.name: p.read_text() for p in (CHART / "files" / name).glob("*.yaml")}
        examples = {p.name: p.read_text() for p in (REPO / "examples" / name).glob("*.yaml")}
        assert shipped == examples, f"infra/helm/driftline/files/{name} differs from examples/"
        data = of_kind(default_docs, "ConfigMap")[f"{PREFIX}-{name}"]["data"]
        assert data == shipped
    catalog = load_featuresets(_spec_dir(default_docs, "featuresets", tmp_path))
    assert [s.name for s in catalog] == ["loans"]
    assert set(load_model_specs(_spec_dir(default_docs, "models", tmp_path))) == {"loans"}


def test_specs_given_in_the_values_replace_the_shipped_ones(
    default_docs: list[dict[str, Any]], cluster_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    specs = load_model_specs(_spec_dir(cluster_docs, "models", tmp_path))
    assert set(specs) == {"loans"}
    assert "linear_model.LogisticRegression" in str(specs["loans"].pipeline)
    # Training's pods roll when a spec or a setting changes (a checksum of the ConfigMaps).
    sums = [
        workload(docs, "training")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        for docs in (default_docs, cluster_docs)
    ]
    assert sums[0] != sums[1]


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("serving.replicas=-1", "/serving/replicas"),
        ("image.tag=", "/image/tag"),
        ("kafka.bootstrapServers=kafka", "/kafka/bootstrapServers"),
        (f"features.replicas={EVENTS_VALID.partitions + 1}", "/features/replicas"),
        ("training.replicas=4", "/training/replicas"),
        ("monitoring.replicas=4", "/monitoring/replicas"),
        ("registry.replicas=2", "/registry/persistence/accessMode"),
        ("redis.port=0", "/redis/port"),
        ("ingestion.autoscaling.enabled=yes", "/ingestion/autoscaling/enabled"),
        ("servng.replicas=2", "servng"),
        ("config.servng.canary_percent=5", "invalid propertyName 'servng'"),
        ("security.enabled=true", "/security/caSecret"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field(helm: list[str], value: str, field: str) -> None:
    out = run(helm, "template", RELEASE, str(CHART), "--set", value)
    assert out.returncode != 0, f"{value} was accepted"
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert field in out.stderr, out.stderr


SECURE_SETS = (
    "security.enabled=true",
    "security.caSecret=driftline-ca",
    "security.credentialsSecretPrefix=driftline-creds",
)


@pytest.fixture(scope="module")
def secure_docs(helm: list[str]) -> list[dict[str, Any]]:
    return render(helm, CI_VALUES, sets=SECURE_SETS)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_secure_mode_mounts_each_service_its_credentials(
    secure_docs: list[dict[str, Any]],
    service: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = workload(secure_docs, service)
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)
    settings, _ = _settings_of(secure_docs, service, tmp_path, monkeypatch)
    creds = credentials_for(settings.security, service)
    assert creds is not None  # secure mode is on, as the service's own identity
    pod = doc["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container(doc)["volumeMounts"]}
    # the service's own Secret holds what Credentials reads from <dir>/<service>/...
    own = mounts[str(creds.directory)]
    assert own["readOnly"] is True
    secret = volumes[own["name"]]["secret"]
    assert secret["secretName"] == f"driftline-creds-{service}"
    # ... and the CA Secret's ca.crt is <dir>/ca.crt
    ca = mounts[str(creds.root / "ca.crt")]
    assert ca["subPath"] == "ca.crt"
    assert volumes[ca["name"]]["secret"]["secretName"] == "driftline-ca"
    # no other service's credentials reach this pod
    names = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert names == {"driftline-ca", f"driftline-creds-{service}"}
    # the admin port speaks HTTPS only: probes and scrapes say so
    c = container(doc)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTPS"}
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert c["startupProbe"]["httpGet"]["scheme"] == "HTTPS"
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scheme"] == "https"


def test_min_replicas_above_max_is_refused(helm: list[str]) -> None:
    sets = ["serving.autoscaling.enabled=true", "serving.autoscaling.minReplicas=5",
            "serving.autoscaling.maxReplicas=3"]  # fmt: skip
    out = run(helm, "template", RELEASE, str(CHART), *(f"--set={s}" for s in sets))
    assert out.returncode != 0
    assert "serving.autoscaling.minReplicas (5) is above" in out.stderr, out.stderr


def test_the_schema_agrees_with_the_settings_and_the_topics() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    props = schema["properties"]
    assert set(props["config"]["propertyNames"]["enum"]) == set(PlatformSettings.model_fields)
    assert props["features"]["properties"]["replicas"]["maximum"] == EVENTS_VALID.partitions
    for service, most in STANDBYS.items():
        assert props[service]["properties"]["replicas"]["maximum"] == most
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(SERVICE_NAMES) <= set(values)


def test_the_helm_built_by_infra_fetch_is_the_pinned_version(helm: list[str]) -> None:
    out = run(helm, "version", "--short")
    assert out.stdout.strip() == f"v{HELM_VERSION}", out.stdout + out.stderr


def test_a_built_helm_is_not_rebuilt_and_an_old_go_is_refused(tmp_path: Path) -> None:
    version_dir = tmp_path / "cache" / HELM_VERSION
    version_dir.mkdir(parents=True)
    (version_dir / "helm").write_text("binary")
    (version_dir / ".complete").write_text(f"helm {HELM_VERSION}\n")
    assert fetch_helm(cache=tmp_path / "cache", go="no-such-go") == version_dir / "helm"
    go = tmp_path / "go"
    go.write_text("#!/bin/sh\necho go1.20.3\n")
    go.chmod(0o755)
    with pytest.raises(MissingToolError, match=r"Go 1\.20; building Helm needs Go 1\.21"):
        fetch_helm(cache=tmp_path / "other", go=str(go), progress=lambda _: None)
