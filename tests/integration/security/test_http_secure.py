"""Secure mode's HTTP links over real sockets: every service's admin port (``/healthz``,
``/readyz``, ``/metrics``, the dashboard, ingestion's ``POST /v1/events``) speaks HTTPS
only, started by the same :func:`driftline.runtime.serve_http` the services use.

- an outside client (curl) verifying the server against the platform CA reads it, with
  or without a client certificate (``CERT_OPTIONAL``: a browser, a Prometheus);
- curl without the CA refuses the server (it is not a public CA's);
- a plaintext client gets no HTTP answer;
- a client certificate of another CA and an expired one are refused at the handshake;
- the CLI's own client context (:func:`driftline.security.http_tls.client_context`) works;
- ingestion's API over HTTPS (its routes on a real Kafka broker and redis-server, as the
  service builds them) answers 401 to a wrong or missing ``X-API-Key`` and takes an event
  with the client's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.client
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from redis.asyncio import Redis
from support.hostile import event

from driftline.devtools.infra import KafkaNode, RedisNode, free_port
from driftline.devtools.infra.pki import (
    DEFAULT_IDENTITIES,
    issue,
    load_ca,
    new_ca,
    write_credentials,
    write_identity,
)
from driftline.ingestion.core import IngestionCore
from driftline.ingestion.dedup import RedisDedupStore
from driftline.ingestion.http_api import add_ingest_routes, ingestion_api_keys
from driftline.ingestion.writer import OutcomeCounters
from driftline.kafkaio import make_producer, provision_topics
from driftline.runtime import Health, build_admin_app, serve_http
from driftline.security import http_tls
from driftline.security.auth_files import write_auth_files
from driftline.settings import PlatformSettings, SecuritySettings
from driftline.specs import load_featuresets
from driftline.telemetry import ServiceMetrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Pki:
    """The platform's credentials and the ones that must be refused."""

    root: Path
    other_ca: Path
    """``admin`` with a certificate of another CA."""
    expired: Path
    """``admin`` with a platform certificate that expired yesterday."""

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    def security(self, identity: str | None = None) -> SecuritySettings:
        return SecuritySettings(enabled=True, credentials_dir=self.root, identity=identity)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("credentials")
    write_credentials(root, DEFAULT_IDENTITIES)
    write_auth_files(root)
    ca = load_ca(root)
    other_ca, expired = tmp_path_factory.mktemp("other-ca"), tmp_path_factory.mktemp("expired")
    stranger = new_ca("Not Driftline's CA")
    write_identity(other_ca / "admin", stranger, *issue(stranger, "admin"), secrets_too=False)
    now = dt.datetime.now(dt.UTC)
    old = issue(
        ca, "admin", not_before=now - dt.timedelta(days=2), not_after=now - dt.timedelta(days=1)
    )
    write_identity(expired / "admin", ca, *old, secrets_too=False)
    return Pki(root, other_ca, expired)


AppFactory = Callable[[], AbstractAsyncContextManager[FastAPI]]


@contextlib.contextmanager
def served(app_factory: AppFactory, security: SecuritySettings, identity: str) -> Iterator[int]:
    """Serve the app ``app_factory`` builds with :func:`serve_http`, as service ``identity``
    would, on a free loopback port (in a thread with its own event loop); the port."""
    port = free_port()
    errors: list[BaseException] = []
    running: dict[str, Any] = {}

    async def main() -> None:
        running["loop"], running["stop"] = asyncio.get_running_loop(), asyncio.Event()
        async with app_factory() as app:
            await serve_http(
                app, "127.0.0.1", port, running["stop"], security=security, identity=identity
            )

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by the waiting test
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"admin-{identity}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while True:
        assert not errors, errors
        assert thread.is_alive(), "the admin server's thread ended before serving"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port} after 60 s"
            time.sleep(0.1)
    try:
        yield port
    finally:
        running["loop"].call_soon_threadsafe(running["stop"].set)
        thread.join(30)
        assert not errors, errors


REACHED: list[str] = []
"""Every request that reached the app's ``/probe``."""


@asynccontextmanager
async def admin_app() -> AsyncIterator[FastAPI]:
    """Monitoring's admin app, and ``/probe``, which records each request that reaches it."""
    health = Health("monitoring")
    health.set("kafka", True)
    app = build_admin_app(health, ServiceMetrics("monitoring"))

    @app.get("/probe")
    async def probe(request: Request) -> dict[str, int]:
        REACHED.append(request.url.path)
        return {"reached": len(REACHED)}

    yield app


@pytest.fixture(scope="module")
def admin_port(pki: Pki) -> Iterator[int]:
    with served(admin_app, pki.security(), "monitoring") as port:
        yield port


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def client(pki: Pki, credentials: Path | None) -> ssl.SSLContext:
    """A context trusting the platform CA, presenting ``credentials``' admin certificate."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    if credentials is not None:
        context.load_cert_chain(
            credentials / "admin" / "tls.crt", credentials / "admin" / "tls.key"
        )
    return context


def refusal(url: str, context: ssl.SSLContext | None) -> str:
    """What the client got instead of an answer (the test fails on an HTTP answer)."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as r:
            pytest.fail(f"{url} answered {r.status}: {r.read()[:200]!r}")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError("unreachable")


# -- the admin port ---------------------------------------------------------------------


def test_an_outside_client_verifying_the_ca_reads_every_admin_endpoint(
    pki: Pki, admin_port: int
) -> None:
    base = f"https://127.0.0.1:{admin_port}"
    health = curl("--cacert", str(pki.ca), f"{base}/healthz")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "ok", "service": "monitoring"}
    ready = curl("--cacert", str(pki.ca), "--write-out", "\n%{http_code}", f"{base}/readyz")
    assert ready.stdout.endswith("\n200"), ready.stdout + ready.stderr
    metrics = curl("--cacert", str(pki.ca), f"{base}/metrics")
    assert "driftline_service_info" in metrics.stdout, metrics.stderr
    # ... with a platform certificate too (as Prometheus scrapes), and by name
    own = curl(
        *("--cacert", str(pki.ca), "--cert", str(pki.root / "admin" / "tls.crt")),
        *("--key", str(pki.root / "admin" / "tls.key")),
        f"https://localhost:{admin_port}/healthz",
    )
    assert own.returncode == 0 and '"ok"' in own.stdout, own.stderr
    # The CLI's own context (health checks, `driftline status`): CA and admin's certificate.
    url = http_tls.url("0.0.0.0", admin_port, pki.security(), "/healthz")
    assert url == f"{base}/healthz"
    context = http_tls.client_context(pki.security(), "admin")
    with urllib.request.urlopen(url, context=context, timeout=10) as r:
        assert r.status == 200


def test_curl_without_the_platform_ca_refuses_the_server(admin_port: int) -> None:
    out = curl(f"https://127.0.0.1:{admin_port}/healthz")
    assert out.returncode == 60, out.stdout + out.stderr  # peer certificate not verified
    assert "ok" not in out.stdout


def test_a_plaintext_client_gets_no_answer(admin_port: int) -> None:
    out = curl(f"http://127.0.0.1:{admin_port}/healthz")
    assert out.returncode != 0, out.stdout
    assert "ok" not in out.stdout
    refusal(f"http://127.0.0.1:{admin_port}/healthz", None)


@pytest.mark.parametrize("which", ["other_ca", "expired"])
def test_a_certificate_of_another_ca_or_an_expired_one_is_refused(
    pki: Pki, admin_port: int, which: str
) -> None:
    url = f"https://127.0.0.1:{admin_port}/probe"
    credentials: Path = getattr(pki, which)
    before = len(REACHED)
    out = curl(
        *("--cacert", str(pki.ca), "--cert", str(credentials / "admin" / "tls.crt")),
        *("--key", str(credentials / "admin" / "tls.key")),
        url,
    )
    # The server drops the connection when the handshake's certificate check fails
    # (curl: 56 connection reset, or 52 empty reply); no HTTP answer, and the request
    # never reached the app.
    assert out.returncode in (35, 52, 56), (out.returncode, out.stdout, out.stderr)
    why = refusal(url, client(pki, credentials))
    assert any(s in why for s in ("Remote", "reset", "SSL", "EOF")), why
    assert len(REACHED) == before, REACHED
    # the same client with the platform's own admin certificate is let in
    with urllib.request.urlopen(url, context=client(pki, pki.root), timeout=10) as r:
        assert r.status == 200
    assert len(REACHED) == before + 1


# -- ingestion's API on its admin port --------------------------------------------------


@pytest.fixture(scope="module")
def ingestion_port(
    pki: Pki, platform_settings: PlatformSettings, kafka: KafkaNode, redis_server: RedisNode
) -> Iterator[int]:
    """Ingestion's HTTP API built as its service builds it (routes on the admin app, its
    keys from the credentials directory) on the harness' broker and redis-server; only its
    HTTP link is secure here (secure Kafka and Redis: test_kafka_secure, test_redis_secure)."""
    settings = platform_settings.model_copy(update={"security": pki.security()})
    catalog = load_featuresets(ROOT / "examples" / "featuresets")
    asyncio.run(provision_topics(settings.kafka))

    @asynccontextmanager
    async def ingestion_app() -> AsyncIterator[FastAPI]:
        metrics = ServiceMetrics("ingestion")
        health = Health("ingestion")
        health.set("kafka", True)
        redis = Redis.from_url(settings.redis.url)
        producer = make_producer(settings.kafka, "test-http-secure")
        await producer.start()
        try:
            app = build_admin_app(health, metrics)
            add_ingest_routes(
                app,
                IngestionCore(catalog, RedisDedupStore(redis, 3600), max_record_bytes=65536),
                producer,
                OutcomeCounters(metrics.registry),
                ingestion_api_keys(settings),
                max_body_bytes=settings.kafka.max_message_bytes,
                max_records=100,
            )
            yield app
        finally:
            await producer.stop()
            await redis.aclose()

    with served(ingestion_app, settings.security, "ingestion") as port:
        yield port


def test_ingestion_over_https_checks_the_api_key(pki: Pki, ingestion_port: int) -> None:
    url = f"https://127.0.0.1:{ingestion_port}/v1/events"
    body = json.dumps(event(f"http-secure-{time.time_ns()}", "c-1"))

    def post(*headers: str) -> tuple[str, str]:
        out = curl(
            *("--cacert", str(pki.ca), "--request", "POST", "--data", body),
            *("--header", "Content-Type: application/json"),
            *(arg for h in headers for arg in ("--header", h)),
            *("--write-out", "\n%{http_code}", url),
        )
        assert out.returncode == 0, out.stderr
        text, _, code = out.stdout.rpartition("\n")
        return code, text

    assert post("X-API-Key: not-a-key")[0] == "401"
    assert post()[0] == "401"
    key = (pki.root / "client" / "api.key").read_text().strip()
    code, text = post(f"X-API-Key: {key}")
    assert code == "200", text
    assert json.loads(text) == {"accepted": 1, "rejected": []}
    # and the plaintext port is no way around the key
    out = curl("--request", "POST", "--data", body, f"http://127.0.0.1:{ingestion_port}/v1/events")
    assert out.returncode != 0 and "accepted" not in out.stdout, out.stdout
