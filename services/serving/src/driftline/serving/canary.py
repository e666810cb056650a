"""Canary routing: a sticky share of entities goes to the challenger.

An entity's bucket is a hash of its id (BLAKE2b, the same in every process and
replica), uniform in ``[0, 100)``; the entity is in the canary when its bucket
is below the percentage. So the same entities always go to the challenger, and
raising the percentage only adds entities, never reshuffles them.

>>> in_canary("customer-42", 0.0)
False
>>> in_canary("customer-42", 100.0)
True
>>> in_canary("customer-42", 20.0) == in_canary("customer-42", 20.0)
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

__all__ = ["CanarySetting", "bucket_of", "in_canary"]

_SCALE = 100.0 / 2**64


def bucket_of(entity_id: str) -> float:
    """The entity's position in ``[0, 100)``: stable across processes and restarts."""
    digest = hashlib.blake2b(entity_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") * _SCALE


def in_canary(entity_id: str, percent: float) -> bool:
    """Whether ``entity_id`` is routed to the canary at ``percent`` (0 to 100)."""
    if percent <= 0.0:
        return False
    if percent >= 100.0:
        return True
    return bucket_of(entity_id) < percent


@dataclass(frozen=True, slots=True)
class CanarySetting:
    """The canary of one model: ``percent`` of entities go to ``alias``."""

    percent: float = 0.0
    alias: str = "challenger"
    updated_at: datetime | None = None
    updated_by: str = ""
    reason: str = ""
