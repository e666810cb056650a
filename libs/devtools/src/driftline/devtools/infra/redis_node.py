"""A ``redis-server`` with its data, config and log under the state directory.

In secure mode (``secure_credentials``: the credentials directory ``driftline infra up
--secure`` wrote, see :mod:`driftline.devtools.infra.pki`) it listens on TLS only, on
the same port, demands a client certificate from the platform CA and knows one ACL user
per identity of :data:`driftline.security.redis_acl.REDIS_GRANTS`, the ``default`` user
off. Its server certificate is identity ``redis`` (``<credentials>/redis/tls.crt``),
issued by the platform CA on first start and kept afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

from driftline.devtools.infra import pki
from driftline.devtools.infra.component import LocalComponent, PortClaim
from driftline.devtools.infra.layout import find_infra_dir
from driftline.devtools.infra.readiness import redis_answers
from driftline.devtools.infra.templates import render_template_file
from driftline.devtools.infra.tools import require_tool
from driftline.security.credentials import CA_FILE, CERT_FILE, KEY_FILE, Credentials
from driftline.security.redis_acl import acl_file_text
from driftline.security.redis_auth import RedisAuth, redis_auth_of
from driftline.settings import PlatformSettings

__all__ = ["SERVER_IDENTITY", "RedisNode", "ensure_server_certificate"]

SERVER_IDENTITY = "redis"
"""The redis-server's own certificate's identity (CN) under the credentials directory."""

OPS_IDENTITY = "admin"
"""Who the node's readiness check logs in as in secure mode."""


def ensure_server_certificate(credentials_root: Path, host: str = "127.0.0.1") -> Path:
    """``<credentials_root>/redis/``, holding a server certificate for ``host`` (and
    ``localhost``, ``127.0.0.1``) issued by the CA in ``credentials_root``; an existing
    one is kept. The CA's key (``ca.key``) must be there: ``pki.write_credentials`` made it.
    """
    directory = credentials_root / SERVER_IDENTITY
    if (directory / CERT_FILE).is_file() and (directory / KEY_FILE).is_file():
        return directory
    hosts = ["localhost", "127.0.0.1"]
    if host not in hosts and host not in ("0.0.0.0", "::"):
        hosts.append(host)
    ca = pki.load_ca(credentials_root)
    key, cert = pki.issue(ca, SERVER_IDENTITY, hosts=hosts)
    pki.write_identity(directory, ca, key, cert, secrets_too=False)
    return directory


class RedisNode(LocalComponent):
    """One ``redis-server`` (append-only file on) with all state under ``state_dir``."""

    name = "redis"

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        executable: str = "redis-server",
        infra_dir: Path | None = None,
        secure_credentials: Path | None = None,
    ) -> None:
        """``secure_credentials``: run in secure mode with this credentials directory
        (the CA, ``ca.key``, and each granted identity's ``redis.password``)."""
        super().__init__(state_dir)
        self.host = host
        self.port = port
        self.executable = executable
        self.infra_dir = infra_dir
        self.secure_credentials = (
            None if secure_credentials is None else secure_credentials.expanduser().absolute()
        )
        self.node_dir = self.state_dir / "redis"
        self.data_dir = self.node_dir / "data"
        self.config_file = self.node_dir / "redis.conf"
        self.secure_config_file = self.node_dir / "redis-secure.conf"
        self.acl_file = self.node_dir / "users.acl"

    @classmethod
    def from_settings(
        cls, settings: PlatformSettings, *, infra_dir: Path | None = None
    ) -> RedisNode:
        """The server ``driftline infra up`` runs for ``settings`` (secure when
        ``security.enabled``, with ``security.credentials_dir``)."""
        security = settings.security
        return cls(
            settings.infra.state_dir,
            host=settings.redis.host,
            port=settings.redis.port,
            executable=settings.infra.redis_server,
            infra_dir=infra_dir,
            secure_credentials=security.credentials_dir if security.enabled else None,
        )

    @property
    def secure(self) -> bool:
        """Whether it runs in secure mode (TLS only, ACL users)."""
        return self.secure_credentials is not None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``redis://host:port/0`` (secure mode: the same URL; TLS and the login come
        from :mod:`driftline.security.redis_auth`)."""
        return f"redis://{self.host}:{self.port}/0"

    def auth(self, identity: str = OPS_IDENTITY) -> RedisAuth | None:
        """``identity``'s login to this server in secure mode; None in plaintext mode."""
        if self.secure_credentials is None:
            return None
        return redis_auth_of(Credentials(self.secure_credentials, identity))

    def port_claims(self) -> list[PortClaim]:
        return [PortClaim(self.host, self.port, "Redis", "DRIFTLINE_REDIS__PORT")]

    def answering(self) -> bool:
        return redis_answers(self.host, self.port, auth=self.auth())

    def prepare(self) -> list[str]:
        executable = require_tool(self.executable, setting="DRIFTLINE_INFRA__REDIS_SERVER")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        infra = find_infra_dir(self.infra_dir) / "redis"
        secure_include = ""
        if self.secure_credentials is not None:
            self._prepare_secure(infra, self.secure_credentials)
            secure_include = f'include "{self.secure_config_file}"'
        render_template_file(
            infra / "redis.conf.template",
            self.config_file,
            {
                "host": self.host,
                "port": self.port,
                "data_dir": self.data_dir,
                "pidfile": self.node_dir / "redis-server.pid",
                "secure_include": secure_include,
            },
        )
        return [executable, str(self.config_file)]

    def _prepare_secure(self, infra: Path, root: Path) -> None:
        """The server certificate, the ACL file (``0600``, rewritten each start so that
        it follows the credentials) and the TLS settings redis.conf includes."""
        server = ensure_server_certificate(root, self.host)
        text = acl_file_text(root)
        self.node_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.acl_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(self.acl_file, 0o600)  # an older file keeps its mode through O_TRUNC
        render_template_file(
            infra / "redis-secure.conf.template",
            self.secure_config_file,
            {
                "tls_port": self.port,
                "cert_file": server / CERT_FILE,
                "key_file": server / KEY_FILE,
                "ca_file": root / CA_FILE,
                "acl_file": self.acl_file,
            },
        )
