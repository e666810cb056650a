"""The local platform's certificates and secrets (``driftline infra up --secure``).

A private CA (EC P-256, ten years) signs one certificate per identity: each service
(its certificate is its identity on every link: gRPC mTLS, Kafka SSL, Redis TLS), ``admin``
(the CLI and ops: Kafka super user, registry admin) and ``client`` (a public caller of
serving and ingestion). Every certificate names ``localhost``, ``127.0.0.1`` and the
identity as subject alternative names and may serve and be a client. Each identity also
gets a Kafka SCRAM password, a Redis ACL password, a registry bearer token and an API key,
random and written ``0600`` in the layout :mod:`driftline.security.credentials` reads.
Java (the broker) reads each identity's key and certificate as ``tls.p12`` (PKCS#12,
password in ``tls.p12.password``).

:func:`issue` and :func:`new_ca` are public so tests can make what must be refused: a
certificate from another CA, one that expired.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> written = write_credentials(root, ["serving"])
>>> sorted(p.name for p in (root / "serving").iterdir())  # doctest: +NORMALIZE_WHITESPACE
['api.key', 'kafka.password', 'redis.password', 'tls.crt', 'tls.key', 'tls.p12',
 'tls.p12.password', 'token']
>>> written.identities, (root / "ca.crt").is_file()
(('serving',), True)
>>> write_credentials(root, ["serving"]).created  # kept: a second run changes nothing
False
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from driftline.security.credentials import CA_FILE, CERT_FILE, KEY_FILE

__all__ = [
    "DEFAULT_IDENTITIES",
    "CertificateAuthority",
    "WrittenCredentials",
    "issue",
    "new_ca",
    "write_credentials",
]

DEFAULT_IDENTITIES: tuple[str, ...] = (
    "ingestion",
    "features",
    "training",
    "registry",
    "serving",
    "monitoring",
    "admin",
    "client",
)
"""Who gets credentials: the six services, the CLI/ops (``admin``) and a public caller."""

SECRET_FILES: tuple[str, ...] = ("kafka.password", "redis.password", "token", "api.key")
"""Random secrets each identity gets (see :mod:`driftline.security.credentials`)."""

_UTC = dt.UTC


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA's key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class WrittenCredentials:
    """What :func:`write_credentials` left in ``root``."""

    root: Path
    identities: tuple[str, ...]
    created: bool
    """Whether anything was written (False: every file already existed)."""


def new_ca(name: str = "Driftline local CA", *, days: int = 3650) -> CertificateAuthority:
    """A fresh CA valid from an hour ago for ``days``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(_UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key, cert)


def issue(
    ca: CertificateAuthority,
    identity: str,
    *,
    days: int = 825,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and a certificate for ``identity`` (CN and a DNS name), signed by ``ca``,
    for servers and clients alike (``hosts``: more DNS names or IP addresses).

    ``not_before``/``not_after`` override the validity (a test's expired certificate).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(_UTC)
    start = not_before or now - dt.timedelta(hours=1)
    end = not_after or now + dt.timedelta(days=days)
    names: list[x509.GeneralName] = [x509.DNSName(identity)]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "driftline"),
                    x509.NameAttribute(NameOID.COMMON_NAME, identity),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return key, cert


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """An unencrypted PKCS#8 PEM of ``key``."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_identity(
    directory: Path,
    ca: CertificateAuthority,
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    *,
    secrets_too: bool = True,
) -> None:
    """Write ``tls.crt``, ``tls.key``, ``tls.p12`` (+ password) and, with ``secrets_too``,
    fresh random secrets into ``directory`` (created ``0700``; files ``0600``)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    _write(directory / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / KEY_FILE, key_pem(key))
    p12_password = secrets.token_urlsafe(18)
    p12 = pkcs12.serialize_key_and_certificates(
        name=directory.name.encode(),
        key=key,
        cert=cert,
        cas=[ca.cert],
        encryption_algorithm=serialization.BestAvailableEncryption(p12_password.encode()),
    )
    _write(directory / "tls.p12", p12)
    _write(directory / "tls.p12.password", p12_password.encode() + b"\n")
    if secrets_too:
        for name in SECRET_FILES:
            _write(directory / name, secrets.token_urlsafe(24).encode() + b"\n")


def load_ca(root: Path) -> CertificateAuthority:
    """The CA written in ``root`` (``ca.crt`` and ``ca.key``)."""
    cert = x509.load_pem_x509_certificate((root / CA_FILE).read_bytes())
    key = serialization.load_pem_private_key((root / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{root / 'ca.key'} is not an EC private key")
    return CertificateAuthority(key, cert)


def write_credentials(
    root: Path, identities: Iterable[str] = DEFAULT_IDENTITIES
) -> WrittenCredentials:
    """Make the CA (``ca.crt``, ``ca.key``) and each identity's credentials under ``root``,
    keeping whatever exists already (a restart keeps every password and certificate)."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    created = False
    if (root / CA_FILE).is_file() and (root / "ca.key").is_file():
        ca = load_ca(root)
    else:
        ca = new_ca()
        _write(root / "ca.key", key_pem(ca.key))
        _write(root / CA_FILE, ca.cert_pem())
        created = True
    names = tuple(identities)
    for identity in names:
        directory = root / identity
        if all((directory / f).is_file() for f in (CERT_FILE, KEY_FILE, "tls.p12", *SECRET_FILES)):
            continue
        key, cert = issue(ca, identity)
        write_identity(directory, ca, key, cert)
        created = True
    return WrittenCredentials(root, names, created)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
