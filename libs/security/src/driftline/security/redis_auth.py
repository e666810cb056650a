"""Every Redis client's TLS and login in secure mode: the one factory all sites go through.

In secure mode the redis-server listens on TLS only, demands a client certificate
signed by the platform CA (``tls-auth-clients yes``) and knows one ACL user per identity
(:mod:`driftline.security.redis_acl`). A client therefore needs the CA, its own
certificate and key, and its identity's user name and password; :func:`redis_auth`
gathers them, and :func:`redis_connection` / :meth:`RedisAuth.pipelined_kwargs` hand
them to redis-py and to the online store's pipelined read connection. With secure mode
off both return nothing extra, so the plaintext clients are built exactly as before.

The password is a :class:`pydantic.SecretStr` until the moment a client needs it; the
``repr`` of :class:`RedisAuth` shows ``**********``, and Redis' own refusal
(``WRONGPASS invalid username-password pair or user is disabled``) never repeats it.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> (root / "features").mkdir()
>>> for name in ("tls.crt", "tls.key", "redis.password"):
...     _ = (root / "features" / name).write_text("x")
>>> _ = (root / "ca.crt").write_text("x")
>>> auth = redis_auth(SecuritySettings(enabled=True, credentials_dir=root), "features")
>>> auth.username, "x" in repr(auth.password)
('features', False)
>>> redis_connection("redis://127.0.0.1:6379/0", auth)[0]
'rediss://127.0.0.1:6379/0'
>>> redis_connection("redis://127.0.0.1:6379/0", None)
('redis://127.0.0.1:6379/0', {})
>>> redis_auth(SecuritySettings(), "features") is None
True
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from driftline.security.credentials import Credentials, credentials_for
from driftline.security.redis_acl import REDIS_PASSWORD_FILE
from driftline.settings import PlatformSettings, SecuritySettings

__all__ = ["RedisAuth", "redis_auth", "redis_auth_of", "redis_connection"]


@dataclass(frozen=True)
class RedisAuth:
    """What one identity shows a secure redis-server: TLS files, user and password."""

    username: str
    password: SecretStr = field(repr=False)
    ca_file: Path
    cert_file: Path
    key_file: Path

    def with_password(self, password: str) -> RedisAuth:
        """The same identity with another password (tests of a refused login)."""
        return RedisAuth(
            self.username, SecretStr(password), self.ca_file, self.cert_file, self.key_file
        )

    def client_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for a ``rediss://`` URL (``from_url``, pools):
        verify the server against the CA and its name, present our certificate, log in."""
        return {
            "ssl_ca_certs": str(self.ca_file),
            "ssl_certfile": str(self.cert_file),
            "ssl_keyfile": str(self.key_file),
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "username": self.username,
            "password": self.password.get_secret_value(),
        }

    def redis_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for ``Redis(host=..., port=...)``: TLS on, as above."""
        return {"ssl": True, **self.client_kwargs()}

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: TLS 1.2+, the server verified against the CA (and its host
        name, given as ``server_hostname``), our certificate for the server to verify."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def pipelined_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`driftline.online_store.resp.PipelinedRedis`:
        its TLS context and the ``AUTH`` it sends first on every connection."""
        return {
            "ssl": self.ssl_context(),
            "username": self.username,
            "password": self.password.get_secret_value(),
        }


def redis_auth_of(credentials: Credentials) -> RedisAuth:
    """The Redis login of ``credentials``' identity (its user is its identity's name).

    Raises :class:`~driftline.security.CredentialsError` naming a missing file.
    """
    return RedisAuth(
        username=credentials.identity,
        password=credentials.secret(REDIS_PASSWORD_FILE),
        ca_file=credentials.ca_file,
        cert_file=credentials.cert_file,
        key_file=credentials.key_file,
    )


def redis_auth(
    settings: SecuritySettings | PlatformSettings, default_identity: str
) -> RedisAuth | None:
    """The Redis login of this process (``security.identity``, else ``default_identity``:
    the service's name, ``admin`` for the CLI), or None when secure mode is off."""
    security = settings.security if isinstance(settings, PlatformSettings) else settings
    credentials = credentials_for(security, default_identity)
    return None if credentials is None else redis_auth_of(credentials)


def redis_connection(url: str, auth: RedisAuth | None) -> tuple[str, dict[str, Any]]:
    """``url`` and the extra keyword arguments for redis-py's ``from_url`` (``Redis``,
    ``ConnectionPool``, ``BlockingConnectionPool``): unchanged and none without ``auth``;
    with it, ``rediss://`` and :meth:`RedisAuth.client_kwargs`."""
    if auth is None:
        return url, {}
    if url.startswith("redis://"):
        url = "rediss://" + url[len("redis://") :]
    elif not url.startswith("rediss://"):
        scheme = url.partition(":")[0]  # not the URL itself: it may hold a password
        raise ValueError(f"secure mode needs a redis:// or rediss:// URL, not {scheme}://...")
    return url, auth.client_kwargs()
