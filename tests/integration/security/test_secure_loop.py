"""The whole loop in secure mode, seen from outside (issue 20).

``driftline up --secure --detach`` makes the local CA and every identity's
credentials, starts Kafka (SASL_SSL + client certificates, per-service ACLs), Redis
(TLS only, ACL users), the ops stack and the six services (mTLS between them, registry
roles, API keys); ``driftline demo --secure`` runs the drift scenario through it.  Then:

- the loop closed (drift detected, retrained, promoted, served) and nothing failed;
- the platform really was secure: kcat (librdkafka) gets no metadata from the broker
  in plaintext, redis-cli's plaintext PING gets no answer, a plaintext gRPC client gets
  UNAVAILABLE from serving, and kcat over TLS *does* verify the broker against the CA;
- every service's admin port is HTTPS only: curl with the CA reads ``/healthz``, curl
  without it refuses the server, plain HTTP gets no answer, and Prometheus scraped every
  ``driftline-*`` job over https (targets ``up``);
- no secret (any identity's Kafka or Redis password, token, API key, keystore password
  or private key) appears in any log under the state directory or in any span Jaeger
  holds from the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from driftline.devtools.demo_env import demo_service_env, isolated_platform_env
from driftline.settings.models import SERVICE_NAMES as SERVICES
from driftline.v1 import predictor_pb2, predictor_pb2_grpc

ROOT = Path(__file__).resolve().parents[3]
DRIFT_AT = 4500
"""Later than the plaintext demo tests' 3,000: TLS start-up on a busy two-core machine has
put the first champion after event 3,000 (then no drift can be seen against it)."""
SECRET_FILES = ("kafka.password", "redis.password", "token", "api.key", "tls.p12.password")

pytestmark = pytest.mark.timeout(1200)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "driftline.cli", *args]


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "10", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=20) as r:
        return json.loads(r.read())


def _secrets(credentials: Path) -> dict[str, str]:
    """Every secret written for the run, by where it came from (the private keys by the
    base64 body of their PEM, which is what a leak would show)."""
    found: dict[str, str] = {}
    for directory in sorted(p for p in credentials.iterdir() if p.is_dir()):
        for name in SECRET_FILES:
            path = directory / name
            if path.is_file():
                found[f"{directory.name}/{name}"] = path.read_text().strip()
        key = directory / "tls.key"
        if key.is_file():
            body = "".join(
                line for line in key.read_text().splitlines() if not line.startswith("-----")
            )
            found[f"{directory.name}/tls.key"] = body[:40]
    return found


def test_the_loop_closes_in_secure_mode_and_no_secret_leaks(tmp_path: Path) -> None:
    state = tmp_path / "state"
    credentials = state / "credentials"
    env = isolated_platform_env(state)
    env.update(demo_service_env(DRIFT_AT))
    env["DRIFTLINE_SECURITY__CREDENTIALS_DIR"] = str(credentials)
    jaeger = f"http://127.0.0.1:{env['DRIFTLINE_INFRA__OPS__JAEGER_UI_PORT']}"
    bootstrap = env["DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"]
    report = tmp_path / "out" / "report.md"

    def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _cli(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )

    def logs() -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
            for p in sorted((state / "logs").glob("*.log"))
        )

    up = cli("up", "--secure", "--detach", "--timeout", "300")
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{logs()}"
        demo = cli(
            *("demo", "--secure", "--events", "8000", "--rate", "100"),
            *("--drift-at", str(DRIFT_AT), "--label-delay", "50", "--seed", "7"),
            *("--timeout", "600", "--ops-wait", "5", "--report", str(report)),
        )
        assert demo.returncode == 0, f"{demo.stdout}\n{demo.stderr}\n{logs()}"
        assert "the loop closed" in demo.stdout
        summary = report.read_text()
        assert "| failed requests | 0 |" in summary, summary[:3000]

        # secure for real, by clients the project did not write
        plain = subprocess.run(
            ["kcat", "-b", bootstrap, "-L", "-m", "5"], capture_output=True, text=True, timeout=60
        )
        assert plain.returncode != 0 or "driftline.models" not in plain.stdout, plain.stdout
        tls_only = subprocess.run(
            ["kcat", "-b", bootstrap, "-L", "-m", "5", "-X", "security.protocol=SSL",
             "-X", f"ssl.ca.location={credentials / 'ca.crt'}",
             "-X", f"ssl.certificate.location={credentials / 'client' / 'tls.crt'}",
             "-X", f"ssl.key.location={credentials / 'client' / 'tls.key'}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        # The broker's certificate verifies against the CA (no "certificate verify failed");
        # without SASL the listener still gives no metadata.
        assert "certificate verify failed" not in tls_only.stderr, tls_only.stderr
        assert "driftline.models" not in tls_only.stdout, tls_only.stdout
        redis_port = env["DRIFTLINE_REDIS__PORT"]
        ping = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", redis_port, "PING"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert "PONG" not in ping.stdout, ping.stdout
        serving = f"127.0.0.1:{env['DRIFTLINE_SERVING__GRPC_PORT']}"
        with grpc.insecure_channel(serving) as channel:
            stub = predictor_pb2_grpc.PredictorStub(channel)
            request = predictor_pb2.PredictRequest(model_name="loans", entity_id="c1")
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        for service in SERVICES:
            admin = f"127.0.0.1:{env[f'DRIFTLINE_{service.upper()}__ADMIN__PORT']}/healthz"
            verified = _curl("--cacert", str(credentials / "ca.crt"), f"https://{admin}")
            assert verified.returncode == 0 and '"ok"' in verified.stdout, verified.stderr
            unverified = _curl(f"https://{admin}")  # the platform CA is no public CA
            assert unverified.returncode == 60, (service, unverified.stderr)
            plaintext = _curl(f"http://{admin}")
            assert plaintext.returncode != 0 and '"ok"' not in plaintext.stdout, service
        prometheus = f"http://127.0.0.1:{env['DRIFTLINE_INFRA__OPS__PROMETHEUS_PORT']}"
        targets = _get(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
        scraped = {
            t["labels"]["job"]: (t["scrapeUrl"].split(":")[0], t["health"], t["lastError"])
            for t in targets
            if t["labels"]["job"].startswith("driftline-")
        }
        assert scraped == {f"driftline-{s}": ("https", "up", "") for s in SERVICES}, scraped

        # no secret in any log or span
        secrets = _secrets(credentials)
        assert len(secrets) >= 40, sorted(secrets)
        texts = {
            str(p.relative_to(state)): p.read_text(errors="replace")
            for p in state.rglob("*.log")
            if p.is_file()
        }
        assert any("serving" in name for name in texts), sorted(texts)
        spans: list[str] = []
        for service in _get(f"{jaeger}/api/services")["data"]:
            query = urllib.parse.urlencode({"service": service, "lookback": "2h", "limit": "200"})
            spans += [json.dumps(t) for t in _get(f"{jaeger}/api/traces?{query}")["data"]]
        assert len(spans) >= 20, len(spans)
        texts["jaeger spans"] = "\n".join(spans)
        leaks = [
            f"{what} in {where}"
            for what, secret in secrets.items()
            for where, text in texts.items()
            if secret and secret in text
        ]
        assert not leaks, leaks
    finally:
        cli("down", "--timeout", "60", timeout=600)
