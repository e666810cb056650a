"""Model (de)serialization: the ``river-pickle`` format, verified before unpickling."""

from __future__ import annotations

import pickle
from typing import Any

from driftline.artifacts.signing import verify

__all__ = ["RIVER_PICKLE", "dump_model", "load_model"]

RIVER_PICKLE = "river-pickle"
"""Format name of a pickled River pipeline (``artifact_format`` in the registry)."""


def dump_model(model: Any) -> bytes:
    """The ``river-pickle`` bytes of ``model`` (highest pickle protocol)."""
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def load_model(data: bytes, sha256: str, signature: str | None, key: str | bytes) -> Any:
    """Verify ``data`` (digest, then signature) and only then unpickle it.

    Raises :class:`driftline.contracts.errors.IntegrityError` for a tampered,
    unsigned or foreign-signed artifact; the bytes are never unpickled then.
    """
    verify(data, sha256, signature, key)
    # Safe to unpickle: the bytes are exactly what the registry signed.
    return pickle.loads(data)
