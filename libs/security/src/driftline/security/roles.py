"""The registry's roles: who may read, register, promote, administer.

Four roles, each allowing a set of the registry's RPCs (the registry names the role
each RPC needs):

* ``reader``: reads (every role includes it);
* ``trainer``: registering versions (and recording unserved retrain requests);
* ``promoter``: moving aliases (promote, delete, roll back);
* ``admin``: everything.

A caller has roles through a **bearer token** (``authorization: Bearer <token>``
metadata) or, in secure mode, through its **client certificate's identity** (its CN,
verified by the TLS handshake). When a call carries a token, the token's roles are the
caller's (a token is the more specific credential: an operator's CLI with the admin
certificate can act with a narrower token); otherwise the certificate identity's.

The roles file (``registry.roles_file``; in secure mode ``<credentials_dir>/registry/
roles.yaml`` when present) binds both, role by role. Tokens are listed by the hex
SHA-256 digest of the token, under a name that messages use, so the registry never
holds a token::

    admin:
      identities: [admin]
      tokens: {ops-alice: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8}
    promoter:
      identities: [training]
    trainer:
      identities: [training]
    reader:
      identities: [features, serving, monitoring, client]

Without a file, secure mode binds :data:`DEFAULT_IDENTITY_ROLES` (training registers
and promotes its own candidates under the promotion policy, so it is trainer and
promoter) and no tokens.

>>> book = RoleBook.parse({"promoter": {"tokens": {"ci": token_digest("t0k")}},
...                        "reader": {"identities": ["client"]}})
>>> book.token_roles(token_digest("t0k")), book.identity_roles("client")
(('ci', frozenset({'promoter'})), frozenset({'reader'}))
>>> grants(frozenset({"promoter"}), "reader"), grants(frozenset({"promoter"}), "trainer")
(True, False)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from driftline.contracts.errors import (
    FailedPreconditionError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from driftline.security.grpc_tls import peer_identity

__all__ = [
    "DEFAULT_IDENTITY_ROLES",
    "ROLES",
    "Role",
    "RoleBook",
    "RoleGuard",
    "grants",
    "render_roles",
    "token_digest",
]

Role = Literal["reader", "trainer", "promoter", "admin"]
ROLES: tuple[Role, ...] = ("reader", "trainer", "promoter", "admin")

DEFAULT_IDENTITY_ROLES: Mapping[str, frozenset[Role]] = {
    "admin": frozenset({"admin"}),
    "training": frozenset({"trainer", "promoter"}),
    "monitoring": frozenset({"reader"}),
    "serving": frozenset({"reader"}),
    "features": frozenset({"reader"}),
    "client": frozenset({"reader"}),
}
"""Secure mode's certificate identities and their roles when no roles file is given."""

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def token_digest(token: str) -> str:
    """The hex SHA-256 digest a roles file lists ``token`` by."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def grants(roles: frozenset[str], needed: str) -> bool:
    """Whether holding ``roles`` allows what ``needed`` allows (admin allows everything,
    any role allows reading)."""
    return needed in roles or "admin" in roles or (needed == "reader" and bool(roles))


@dataclass(frozen=True)
class RoleBook:
    """Roles by certificate identity and by token digest (``digest -> (name, roles)``)."""

    identities: Mapping[str, frozenset[str]] = field(default_factory=dict)
    tokens: Mapping[str, tuple[str, frozenset[str]]] = field(default_factory=dict)

    def identity_roles(self, identity: str) -> frozenset[str]:
        """The roles bound to a certificate identity (empty: none)."""
        return self.identities.get(identity, frozenset())

    def token_roles(self, digest: str) -> tuple[str, frozenset[str]] | None:
        """The name and roles of the token with this digest; None for an unknown token."""
        return self.tokens.get(digest)

    def with_token(self, name: str, token: str, roles: Iterable[str]) -> RoleBook:
        """This book and ``token`` (by its digest) bound to ``roles`` under ``name``."""
        tokens = dict(self.tokens)
        tokens[token_digest(token)] = (name, frozenset(roles))
        return RoleBook(self.identities, tokens)

    @classmethod
    def defaults(cls) -> RoleBook:
        """:data:`DEFAULT_IDENTITY_ROLES`, no tokens."""
        return cls(dict(DEFAULT_IDENTITY_ROLES), {})

    @classmethod
    def parse(cls, data: Any, *, source: str = "the roles file") -> RoleBook:
        """The book of a roles mapping (``role -> {identities: [...], tokens: {name:
        digest}}``); :class:`FailedPreconditionError` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise FailedPreconditionError(
                f"{source} must map roles ({', '.join(ROLES)}) to "
                "{identities: [...], tokens: {name: sha256}}"
            )
        identities: dict[str, set[str]] = {}
        tokens: dict[str, tuple[str, set[str]]] = {}
        for role, entry in data.items():
            if role not in ROLES:
                raise FailedPreconditionError(
                    f"{source}: unknown role {role!r}; the roles are {', '.join(ROLES)}"
                )
            entry = entry or {}
            if not isinstance(entry, Mapping) or set(entry) - {"identities", "tokens"}:
                raise FailedPreconditionError(
                    f"{source}: role {role!r} takes `identities` (a list of certificate "
                    "identities) and `tokens` (token name -> hex SHA-256 of the token)"
                )
            for identity in entry.get("identities") or ():
                identities.setdefault(str(identity), set()).add(role)
            named = entry.get("tokens") or {}
            if not isinstance(named, Mapping):
                raise FailedPreconditionError(
                    f"{source}: {role}.tokens must map a token's name to its hex SHA-256 digest"
                )
            for name, digest in named.items():
                digest = str(digest).strip().lower()
                if not _HEX64.match(digest):
                    raise FailedPreconditionError(
                        f"{source}: {role}.tokens.{name} is not a hex SHA-256 digest (64 hex "
                        "digits); list a token by `printf %s TOKEN | sha256sum`, never itself"
                    )
                tokens.setdefault(digest, (str(name), set()))[1].add(role)
        return cls(
            {k: frozenset(v) for k, v in identities.items()},
            {d: (n, frozenset(r)) for d, (n, r) in tokens.items()},
        )

    @classmethod
    def load(cls, path: Path) -> RoleBook:
        """The book in the YAML file ``path``."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FailedPreconditionError(
                f"registry.roles_file {path} cannot be read ({exc.strerror})"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FailedPreconditionError(
                f"registry.roles_file {path} is not YAML: {exc}"
            ) from None
        return cls.parse(data or {}, source=f"registry.roles_file {path}")


def render_roles(
    identity_roles: Mapping[str, Iterable[str]], token_digests: Mapping[str, str]
) -> str:
    """A roles file (YAML) binding each identity's roles to its certificate and, when
    ``token_digests`` has the identity, to its token's digest (token named as the
    identity)."""
    out: dict[str, dict[str, Any]] = {}
    for role in reversed(ROLES):
        holders = sorted(i for i, roles in identity_roles.items() if role in set(roles))
        if not holders:
            continue
        entry: dict[str, Any] = {"identities": holders}
        named = {i: token_digests[i] for i in holders if i in token_digests}
        if named:
            entry["tokens"] = named
        out[role] = entry
    header = (
        "# The registry's roles (registry.roles_file): certificate identities and tokens\n"
        "# (by hex SHA-256 digest, never the token) bound to each role.\n"
    )
    return header + yaml.safe_dump(out, sort_keys=False)


class RoleGuard:
    """Decides, call by call, whether the caller's roles allow a method (see the module doc).

    ``needs`` maps each method to the role it needs. ``certificates``: bind roles to the
    verified client certificate's identity too (secure mode). ``open_reads``: methods that
    need only ``reader`` are allowed to anyone (plaintext mode with a roles file: serving
    and monitoring have no credential to read with).
    """

    def __init__(
        self,
        book: RoleBook,
        needs: Mapping[str, Role],
        *,
        certificates: bool,
        open_reads: bool,
    ) -> None:
        self.book = book
        self._needs = dict(needs)
        self._certificates = certificates
        self._open_reads = open_reads

    def authorize(self, method: str, context: Any) -> None:
        """Raise UNAUTHENTICATED (no role at all) or PERMISSION_DENIED (not the role
        ``method`` needs, named) unless the caller may call ``method``."""
        needed = self._needs[method]
        if needed == "reader" and self._open_reads:
            return
        sent = next(
            (str(v) for k, v in (context.invocation_metadata() or ()) if k == "authorization"),
            None,
        )
        if sent is not None:
            scheme, _, token = sent.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise UnauthenticatedError(
                    f"{method}: the 'authorization' metadata must be 'Bearer <token>'"
                )
            found = self.book.token_roles(token_digest(token))
            if found is None:
                raise UnauthenticatedError(
                    f"{method}: the bearer token sent is bound to no role (registry.roles_file "
                    "binds tokens to roles by their SHA-256 digest)"
                )
            name, roles = found
            who = f"token {name!r}"
        else:
            identity = peer_identity(context) if self._certificates else None
            roles = self.book.identity_roles(identity) if identity is not None else frozenset()
            if not roles:
                whose = (
                    f"the client certificate's identity {identity!r} is bound to no role"
                    if identity is not None
                    else "it carries no token"
                )
                raise UnauthenticatedError(
                    f"{method} needs the {needed} role and {whose}: send 'authorization: "
                    "Bearer <token>' metadata with a token registry.roles_file binds to a role"
                    + (
                        ", or use a certificate whose identity it binds"
                        if self._certificates
                        else ""
                    )
                )
            who = f"certificate {identity!r}"
        if not grants(roles, needed):
            raise PermissionDeniedError(
                f"{method} needs the {needed} role; {who} has {', '.join(sorted(roles))}"
            )
