"""sha256 content addresses and HMAC-SHA256 signatures.

The signature is ``HMAC-SHA256(key, digest(data))`` where ``digest`` is the hex
sha256 of the bytes (as ASCII).  Signing the digest rather than the bytes lets
a verifier check the signature of a stored artifact from its metadata alone;
:func:`verify` always recomputes the digest from the bytes first, so a changed
byte can never hide behind a valid signature.
"""

from __future__ import annotations

import hashlib
import hmac

from driftline.contracts.errors import IntegrityError

__all__ = ["SIGNATURE_ALGORITHM", "digest", "key_id", "sign", "verify"]

SIGNATURE_ALGORITHM = "hmac-sha256"
"""The name recorded with every signature."""


def _key_bytes(key: str | bytes) -> bytes:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    if not raw:
        raise ValueError("the signing key is empty; configure DRIFTLINE_REGISTRY__SIGNING_KEY")
    return raw


def digest(data: bytes) -> str:
    """Hex sha256 of ``data``: the artifact's content address.

    >>> digest(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


def sign(data: bytes, key: str | bytes) -> str:
    """Hex HMAC-SHA256 under ``key`` of ``digest(data)``."""
    return hmac.new(_key_bytes(key), digest(data).encode("ascii"), hashlib.sha256).hexdigest()


def key_id(key: str | bytes) -> str:
    """A short public identifier of ``key`` (for rotation) that does not reveal it."""
    return hmac.new(_key_bytes(key), b"driftline-signing-key-id", hashlib.sha256).hexdigest()[:16]


def verify(data: bytes, sha256: str, signature: str | None, key: str | bytes) -> None:
    """Raise :class:`IntegrityError` unless ``data`` has digest ``sha256`` and a valid signature.

    Checks, in order: a signature is present (an unsigned artifact is refused),
    the bytes hash to ``sha256`` (a changed byte is caught), and ``signature``
    is the HMAC of that digest under ``key`` (a forged or foreign-key signature
    is caught).  Returns ``None`` when all hold.
    """
    if not signature:
        raise IntegrityError(
            f"artifact sha256={sha256 or '?'} is unsigned; refusing to use it "
            "(only artifacts signed by the registry can be loaded)"
        )
    actual = digest(data)
    if not hmac.compare_digest(actual, (sha256 or "").lower()):
        raise IntegrityError(
            f"artifact digest mismatch: expected sha256={sha256}, the {len(data)} bytes "
            f"received hash to {actual}; the artifact was changed or corrupted and is refused"
        )
    expected = sign(data, key)
    if not hmac.compare_digest(expected, signature.lower()):
        raise IntegrityError(
            f"artifact sha256={sha256} has an invalid signature: it was not signed with the "
            "configured key (check DRIFTLINE_REGISTRY__SIGNING_KEY) or was tampered with; refused"
        )
