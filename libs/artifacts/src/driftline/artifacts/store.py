"""The on-disk content-addressed artifact store."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from driftline.artifacts.signing import digest
from driftline.contracts.errors import IntegrityError, InvalidArgumentError, NotFoundError

__all__ = ["ArtifactStore"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactStore:
    """Artifacts under ``<root>/sha256/<first two hex>/<remaining 62 hex>``.

    Writes are atomic (a temporary file in the same directory, fsync, rename),
    so a reader never sees half an artifact and concurrent writers of the same
    content are harmless.  Reads recompute the digest and raise
    :class:`IntegrityError` when the file on disk no longer matches its address.

    >>> import tempfile
    >>> store = ArtifactStore(tempfile.mkdtemp())
    >>> sha = store.put(b"abc")
    >>> store.get(sha)
    b'abc'
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_of(self, sha256: str) -> Path:
        """Where the artifact with this digest lives (whether or not it exists)."""
        sha = sha256.lower()
        if not _SHA256.match(sha):
            raise InvalidArgumentError(f"{sha256!r} is not a hex sha256 digest (64 hex digits)")
        return self.root / "sha256" / sha[:2] / sha[2:]

    def exists(self, sha256: str) -> bool:
        """True when an artifact with this digest is stored."""
        return self.path_of(sha256).is_file()

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its sha256."""
        sha = digest(data)
        target = self.path_of(sha)
        if target.is_file() and target.stat().st_size == len(data):
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``, verified against it.

        Raises :class:`NotFoundError` when absent and :class:`IntegrityError`
        when the stored bytes do not hash to their address.
        """
        path = self.path_of(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"artifact sha256={sha256} is not in the store at {self.root}"
            ) from exc
        actual = digest(data)
        if actual != sha256.lower():
            raise IntegrityError(
                f"stored artifact {path} is corrupt or tampered with: it hashes to {actual}, "
                f"not to its address {sha256}; refusing to serve it"
            )
        return data
