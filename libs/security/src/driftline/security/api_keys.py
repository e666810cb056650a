"""API keys of the public APIs: serving's gRPC (Predictor, OIP) and ingestion's HTTP.

A public caller sends its key as ``x-api-key`` gRPC metadata (``tritonclient``:
``headers={"x-api-key": KEY}``) or the ``X-API-Key`` HTTP header. The service knows
keys only by their hex SHA-256 digest, one a line with an optional name, in its keys
file (``serving.api_keys_file`` / ``ingestion.api_keys_file``; in secure mode
``<credentials_dir>/<service>/api-keys.sha256`` when present, so a Kubernetes Secret
mounted as the service's credentials directory carries it)::

    # sha256 of the key                                               name
    5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 partner-a

Checking a key is one SHA-256 of the key sent and one dict lookup; the service never
holds a key. In secure mode a caller whose verified client certificate is a
Driftline service or ``admin`` (:data:`KEYLESS_IDENTITIES`: the CLI, the demo, the
benchmarks, other services) needs no key: its certificate already says who it is;
the ``client`` identity and any other certificate are public callers and need one.

>>> keys = ApiKeys.parse(f"{key_digest('k-1')} partner-a\\n# a comment\\n")
>>> keys.name_of("k-1"), keys.name_of("k-2")
('partner-a', None)
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.contracts.errors import (
    FailedPreconditionError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from driftline.security.grpc_tls import peer_identity
from driftline.settings.models import SERVICE_NAMES

__all__ = [
    "API_KEY_METADATA",
    "KEYLESS_IDENTITIES",
    "ApiKeyGuard",
    "ApiKeys",
    "HttpApiKeys",
    "key_digest",
    "render_api_keys",
]

API_KEY_METADATA = "x-api-key"
"""The gRPC metadata key (lower case, as gRPC requires) a public caller's key travels in."""

KEYLESS_IDENTITIES: frozenset[str] = frozenset((*SERVICE_NAMES, "admin"))
"""Certificate identities that need no API key in secure mode."""

_LINE = re.compile(r"^([0-9a-fA-F]{64})(?:\s+(\S.*?))?\s*$")


def key_digest(key: str) -> str:
    """The hex SHA-256 digest a keys file lists ``key`` by."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKeys:
    """Accepted keys: ``digest -> name``."""

    names: Mapping[str, str] = field(default_factory=dict)

    def name_of(self, key: str) -> str | None:
        """The name of ``key`` when it is accepted, else None."""
        return self.names.get(hashlib.sha256(key.encode("utf-8")).hexdigest())

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def parse(cls, text: str, *, source: str = "the API keys file") -> ApiKeys:
        """Keys from ``<hex sha256> [name]`` lines (``#`` comments and blank lines skipped;
        an unnamed key is named by its digest's first 8 digits)."""
        names: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            match = _LINE.match(line)
            if match is None:
                raise FailedPreconditionError(
                    f"{source}, line {number}: expected '<hex sha256 of the key> [name]'; "
                    "list a key by `printf %s KEY | sha256sum`, never the key itself"
                )
            digest = match.group(1).lower()
            names[digest] = match.group(2) or f"sha256:{digest[:8]}"
        return cls(names)

    @classmethod
    def load(cls, path: Path, *, setting: str) -> ApiKeys:
        """The keys in ``path`` (``setting`` names it in errors)."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FailedPreconditionError(
                f"{setting} {path} cannot be read ({exc.strerror})"
            ) from None
        return cls.parse(text, source=f"{setting} {path}")


class ApiKeyGuard:
    """A gRPC service's key check, asked by the edge before each guarded call.

    ``service`` names the service in messages. ``certificates``: secure mode, where
    :data:`KEYLESS_IDENTITIES` need no key and ``admin_methods`` (serving's SetCanary)
    are theirs alone. Without ``certificates`` (a keys file in plaintext mode) every
    method needs a key.
    """

    def __init__(
        self,
        keys: ApiKeys,
        *,
        service: str,
        certificates: bool,
        admin_methods: Iterable[str] = (),
    ) -> None:
        self.keys = keys
        self._certificates = certificates
        self._admin = frozenset(admin_methods)
        self._missing = (
            f"{service} requires an API key: send it as '{API_KEY_METADATA}' metadata "
            f"(tritonclient: headers={{'{API_KEY_METADATA}': KEY}})"
        )
        self._wrong = (
            f"the API key sent as '{API_KEY_METADATA}' is not one of {service}'s "
            f"({service}.api_keys_file lists the accepted keys by SHA-256 digest)"
        )

    def authorize(self, method: str, context: Any) -> None:
        """Raise UNAUTHENTICATED (no key, a wrong key) or PERMISSION_DENIED (a key where
        a service certificate is needed) unless the caller may call ``method``."""
        sent = None
        for k, v in context.invocation_metadata() or ():
            if k == API_KEY_METADATA:
                sent = v
                break
        if self._certificates and (sent is None or method in self._admin):
            if peer_identity(context) in KEYLESS_IDENTITIES:
                return
            if method in self._admin:
                raise PermissionDeniedError(
                    f"{method} needs a Driftline service's or the admin's client certificate; "
                    "an API key allows predictions and metadata only"
                )
        if sent is None:
            raise UnauthenticatedError(self._missing)
        if self.keys.name_of(str(sent)) is None:
            raise UnauthenticatedError(self._wrong)


class HttpApiKeys:
    """Ingestion's HTTP key check: ``keys`` (digests) and/or the one plaintext
    ``ingestion.api_key`` of earlier releases (compared in constant time)."""

    def __init__(self, keys: ApiKeys | None = None, legacy: str | None = None) -> None:
        self._keys = keys or ApiKeys()
        self._legacy = legacy.encode("utf-8") if legacy else None

    def accepts(self, key: str | None) -> bool:
        """Whether ``key`` (the ``X-API-Key`` header, None when absent) is accepted."""
        if key is None:
            return False
        if self._legacy is not None and hmac.compare_digest(key.encode("utf-8"), self._legacy):
            return True
        return self._keys.name_of(key) is not None


def render_api_keys(named_keys: Mapping[str, str]) -> str:
    """A keys file (``<digest> <name>`` lines) accepting each key of ``name -> key``."""
    lines = ["# API keys by hex SHA-256 digest (never the key itself), then a name"]
    lines += [f"{key_digest(key)} {name}" for name, key in sorted(named_keys.items())]
    return "\n".join(lines) + "\n"
