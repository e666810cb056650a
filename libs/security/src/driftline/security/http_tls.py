"""Every admin HTTP server of Driftline and every client of one, plaintext or TLS.

Each service's admin port (``/healthz``, ``/readyz``, ``/metrics``, monitoring's
dashboard, ingestion's ``POST /v1/events`` and ``/v1/labels``) is served by uvicorn;
:func:`server_options` is what every one of them is started with, and
:func:`client_context` / :func:`url` / :func:`prometheus_tls_config` are what its
clients (the CLI's health checks, ``driftline status``, the local Prometheus) use, so
secure mode cannot be forgotten at a site. With ``security.enabled`` off they are
empty (``{}``, ``None``, ``http://``) and the servers and clients are exactly what
they were. In secure mode:

* the server speaks HTTPS only (a plaintext request gets no HTTP answer), presents
  ``<identity>/tls.crt`` and asks for a client certificate without demanding one
  (``CERT_OPTIONAL``): a browser on the dashboard or a Prometheus without a client
  certificate may read over TLS, while a certificate that *is* presented must chain to
  ``ca.crt`` and be valid now, so another CA's certificate and an expired one fail the
  handshake (OpenSSL's ``SSL_VERIFY_PEER``) and never reach the app. What the
  admin port allows without a certificate is what it allowed before: health, metrics
  and the dashboard are read-only, and ingestion's API still wants its ``X-API-Key``;
* a client verifies the server against ``ca.crt`` and its address (the certificates
  name ``localhost`` and ``127.0.0.1``) and presents its own certificate.

>>> import tempfile
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> (root / "serving").mkdir()
>>> for name in ("serving/tls.crt", "serving/tls.key", "ca.crt"):
...     _ = (root / name).write_text("x")
>>> secure = SecuritySettings(enabled=True, credentials_dir=root)
>>> opts = server_options(secure, "serving")
>>> opts["ssl_cert_reqs"] == ssl.CERT_OPTIONAL, Path(opts["ssl_certfile"]).parent.name
(True, 'serving')
>>> server_options(SecuritySettings(), "serving"), client_context(None, "admin")
({}, None)
>>> url("127.0.0.1", 8080, secure, "/healthz"), url("0.0.0.0", 8080, None)
('https://127.0.0.1:8080/healthz', 'http://127.0.0.1:8080')
"""

from __future__ import annotations

import ssl
from typing import Any

from driftline.security.credentials import CA_FILE, CERT_FILE, KEY_FILE, credentials_for
from driftline.settings import SecuritySettings

__all__ = [
    "CLIENT_CERT_REQS",
    "client_context",
    "prometheus_tls_config",
    "scheme",
    "server_options",
    "url",
]

CLIENT_CERT_REQS = ssl.CERT_OPTIONAL
"""What the admin servers ask of a client certificate: none needed, a presented one verified
(``tests/integration/security/test_http_secure.py`` shows another CA's and an expired one
refused at the handshake)."""

_ANY_ADDRESS = ("0.0.0.0", "", "::")


def _secure(security: SecuritySettings | None) -> bool:
    return security is not None and security.enabled


def server_options(security: SecuritySettings | None, identity: str) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments for an admin server run as ``identity`` (the
    service's name; ``security.identity`` overrides it): none in plaintext mode, else
    TLS with the identity's certificate and the CA that presented client certificates
    must chain to. A missing file raises
    :class:`~driftline.security.credentials.CredentialsError` naming it."""
    creds = credentials_for(security, identity) if security is not None else None
    if creds is None:
        return {}
    return {
        "ssl_certfile": str(creds.cert_file),
        "ssl_keyfile": str(creds.key_file),
        "ssl_ca_certs": str(creds.ca_file),
        "ssl_cert_reqs": CLIENT_CERT_REQS,
    }


def client_context(security: SecuritySettings | None, identity: str) -> ssl.SSLContext | None:
    """A client context for an admin server (``urllib``'s ``context=``, httpx's
    ``verify=``): the server verified against the CA and its host name, ``identity``'s
    certificate presented; None in plaintext mode."""
    creds = credentials_for(security, identity) if security is not None else None
    if creds is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(creds.ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(creds.cert_file), str(creds.key_file))
    return context


def scheme(security: SecuritySettings | None) -> str:
    """``https`` in secure mode, else ``http``."""
    return "https" if _secure(security) else "http"


def url(host: str, port: int, security: SecuritySettings | None, path: str = "") -> str:
    """The URL of ``path`` on the admin server bound to ``host:port`` (a wildcard bind
    address is reached on ``127.0.0.1``, one of the names its certificate holds)."""
    reach = "127.0.0.1" if host in _ANY_ADDRESS else host
    return f"{scheme(security)}://{reach}:{port}{path}"


def prometheus_tls_config(
    security: SecuritySettings | None, identity: str
) -> dict[str, str] | None:
    """A Prometheus scrape job's ``tls_config`` for the admin servers (the CA to verify
    them with, ``identity``'s certificate and key: absolute file paths, never their
    contents); None in plaintext mode.

    The files need not exist yet (``infra up --secure`` configures Prometheus before it
    writes the credentials); Prometheus reads them when it scrapes.
    """
    creds = credentials_for(security, identity) if security is not None else None
    if creds is None:
        return None
    root, own = creds.root.absolute(), creds.directory.absolute()
    return {
        "ca_file": str(root / CA_FILE),
        "cert_file": str(own / CERT_FILE),
        "key_file": str(own / KEY_FILE),
    }
