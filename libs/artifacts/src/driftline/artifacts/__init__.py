"""Content-addressed, signed model artifacts.

An artifact is addressed by the sha256 of its bytes and signed with
HMAC-SHA256 over that digest.  Nothing here unpickles bytes that have not
passed :func:`verify` first.

>>> from driftline.artifacts import digest, sign, verify
>>> data = b"model bytes"
>>> sig = sign(data, "k")
>>> verify(data, digest(data), sig, "k")  # silent when intact
"""

from driftline.artifacts.model_codec import RIVER_PICKLE, dump_model, load_model
from driftline.artifacts.signing import (
    SIGNATURE_ALGORITHM,
    digest,
    key_id,
    sign,
    verify,
)
from driftline.artifacts.store import ArtifactStore

__all__ = [
    "RIVER_PICKLE",
    "SIGNATURE_ALGORITHM",
    "ArtifactStore",
    "digest",
    "dump_model",
    "key_id",
    "load_model",
    "sign",
    "verify",
]
