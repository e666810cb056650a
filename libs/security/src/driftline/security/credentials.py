"""Each process's credentials in secure mode, read from ``security.credentials_dir``.

The layout (written by ``driftline infra up --secure``; on Kubernetes, one Secret per
identity mounted at ``<credentials_dir>/<identity>`` and the CA at ``ca.crt``)::

    ca.crt                          the CA every server and client trusts
    <identity>/tls.crt, tls.key     the identity's certificate (CN = identity) and key (PEM)
    <identity>/kafka.password       its Kafka SCRAM password (Kafka user = identity)
    <identity>/redis.password       its Redis ACL password (Redis user = identity)
    <identity>/token                its bearer token (the registry's roles bind tokens)
    <identity>/api.key              its API key for serving and ingestion (public callers)

A missing file is a :class:`CredentialsError` naming the file, the identity and the
setting to change. Secrets are returned as :class:`pydantic.SecretStr`, whose ``repr`` and
``str`` are ``**********``, so a secret that reaches a log line, a span or an error
message by mistake shows nothing.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> (d / "serving").mkdir()
>>> _ = (d / "serving" / "api.key").write_text("k-123\\n")
>>> creds = Credentials(d, "serving")
>>> creds.secret("api.key"), creds.secret("api.key").get_secret_value()
(SecretStr('**********'), 'k-123')
>>> creds.secret("kafka.password")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
driftline.security.credentials.CredentialsError: secure mode: serving's kafka.password is ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from driftline.contracts.errors import FailedPreconditionError
from driftline.settings import SecuritySettings

__all__ = ["CA_FILE", "Credentials", "CredentialsError", "credentials_for"]

CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"


class CredentialsError(FailedPreconditionError):
    """A credential secure mode needs is missing or unreadable."""


@dataclass(frozen=True)
class Credentials:
    """What identity ``identity`` proves itself with, under ``root`` (the credentials dir)."""

    root: Path
    identity: str

    @property
    def directory(self) -> Path:
        """``<root>/<identity>``."""
        return self.root / self.identity

    @property
    def ca_file(self) -> Path:
        """The CA certificate every peer is verified against."""
        return self._file(self.root / CA_FILE, "the CA certificate")

    @property
    def cert_file(self) -> Path:
        """This identity's certificate (PEM)."""
        return self._file(self.directory / CERT_FILE, f"{self.identity}'s certificate")

    @property
    def key_file(self) -> Path:
        """This identity's private key (PEM, PKCS#8)."""
        return self._file(self.directory / KEY_FILE, f"{self.identity}'s private key")

    def ca_pem(self) -> bytes:
        """The CA certificate's bytes."""
        return self.ca_file.read_bytes()

    def cert_pem(self) -> bytes:
        """The certificate's bytes."""
        return self.cert_file.read_bytes()

    def key_pem(self) -> bytes:
        """The private key's bytes."""
        return self.key_file.read_bytes()

    def secret(self, name: str) -> SecretStr:
        """The secret in ``<identity>/<name>`` (surrounding whitespace stripped)."""
        path = self.directory / name
        try:
            return SecretStr(path.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise CredentialsError(self._missing(f"{self.identity}'s {name}", path, exc)) from None

    def has(self, name: str) -> bool:
        """Whether ``<identity>/<name>`` exists."""
        return (self.directory / name).is_file()

    def _file(self, path: Path, what: str) -> Path:
        if not path.is_file():
            raise CredentialsError(self._missing(what, path, None))
        return path

    def _missing(self, what: str, path: Path, exc: OSError | None) -> str:
        why = (
            "is missing"
            if exc is None or isinstance(exc, FileNotFoundError)
            else f"is unreadable ({exc.strerror})"
        )
        return (
            f"secure mode: {what} {why} ({path}); run `driftline infra up --secure` to write "
            "the local credentials, or point security.credentials_dir "
            "(DRIFTLINE_SECURITY__CREDENTIALS_DIR) at the directory holding them"
        )


def credentials_for(settings: SecuritySettings, default_identity: str) -> Credentials | None:
    """The credentials of this process (``security.identity``, else ``default_identity``),
    or None when secure mode is off."""
    if not settings.enabled:
        return None
    return Credentials(settings.credentials_dir.expanduser(), settings.identity or default_identity)
