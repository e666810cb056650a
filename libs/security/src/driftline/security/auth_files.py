"""Where the registry's roles file and the public APIs' key files are, and writing them
from a credentials directory (``driftline infra up --secure``).

Both live in the owning service's credentials directory by default, so on Kubernetes the
service's Secret (mounted at ``<credentials_dir>/<service>``) carries them beside its
certificate::

    <credentials_dir>/registry/roles.yaml            registry.roles_file
    <credentials_dir>/serving/api-keys.sha256        serving.api_keys_file
    <credentials_dir>/ingestion/api-keys.sha256      ingestion.api_keys_file

They hold digests only: the roles file binds each identity's certificate and the SHA-256
of its ``token`` to its roles; a keys file lists the SHA-256 of each identity's
``api.key``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from driftline.security.api_keys import render_api_keys
from driftline.security.credentials import credentials_for
from driftline.security.roles import DEFAULT_IDENTITY_ROLES, render_roles, token_digest
from driftline.settings import SecuritySettings

__all__ = [
    "API_KEYS_FILE",
    "ROLES_FILE",
    "auth_file",
    "write_auth_files",
]

ROLES_FILE = "roles.yaml"
"""The registry's roles file, in its credentials directory."""
API_KEYS_FILE = "api-keys.sha256"
"""A public API's keys file, in the service's credentials directory."""


def auth_file(
    security: SecuritySettings, identity: str, configured: Path | None, name: str
) -> Path | None:
    """The file a setting names (``configured``), else in secure mode
    ``<credentials_dir>/<identity>/<name>`` when it exists, else None."""
    if configured is not None:
        return configured.expanduser()
    creds = credentials_for(security, identity)
    if creds is None:
        return None
    path = creds.directory / name
    return path if path.is_file() else None


def write_auth_files(
    root: Path,
    *,
    identity_roles: Mapping[str, Iterable[str]] = DEFAULT_IDENTITY_ROLES,
    key_services: Iterable[str] = ("serving", "ingestion"),
) -> list[Path]:
    """Write ``registry/roles.yaml`` and each of ``key_services``' ``api-keys.sha256``
    under the credentials directory ``root`` (what ``write_credentials`` made); the
    files written.

    The roles file binds each identity of ``identity_roles`` (by certificate) and its
    ``token`` (by digest, when the identity has one) to its roles; each keys file
    accepts every identity's ``api.key``, named after the identity. Rewritten each
    time, so a rotated token or key takes effect at the next start.
    """
    identities = sorted(p.name for p in root.iterdir() if p.is_dir())
    tokens = {
        i: token_digest((root / i / "token").read_text(encoding="utf-8").strip())
        for i in identities
        if (root / i / "token").is_file()
    }
    keys = {
        i: (root / i / "api.key").read_text(encoding="utf-8").strip()
        for i in identities
        if (root / i / "api.key").is_file()
    }
    written = [_write(root / "registry" / ROLES_FILE, render_roles(identity_roles, tokens))]
    for service in key_services:
        written.append(_write(root / service / API_KEYS_FILE, render_api_keys(keys)))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path
