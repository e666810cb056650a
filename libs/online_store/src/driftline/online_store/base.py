"""The online store contract: what the features worker writes and the serving path reads.

Writes are *event-time monotonic*: a feature is overwritten only by a value whose
event time is the same or newer, so a late or replayed event never replaces a
newer value, and replaying the same write is harmless.  TTL is enforced on read:
a value older than the feature set's TTL (relative to the reader's clock) comes
back ``STALE`` with no value.

The error contract is one exception, :class:`StoreUnavailable`: a store raises it
for every storage failure (unreachable, timed out, refused), whatever its client
library raises, so the features service needs no store-specific ``except``.  It
is a retriable :class:`~driftline.contracts.errors.UnavailableError`: the gRPC edge
answers ``UNAVAILABLE`` and the worker waits the outage out.

Optional capabilities are *declared* as attributes that default to None (see
:attr:`OnlineStore.generation_marker`), so a caller asks the store what it offers
instead of testing its class.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from tenacity import AsyncRetrying, RetryError, stop_after_delay, wait_fixed

from driftline.contracts.errors import UnavailableError
from driftline.contracts.messages import FeatureValue
from driftline.specs import FeatureSetSpec

__all__ = [
    "MISSING",
    "EntityWrite",
    "FeatureRead",
    "FeatureStatus",
    "GenerationMarker",
    "OnlineStore",
    "StoreUnavailable",
    "TimedValue",
    "classify",
    "wait_until_reachable",
]

TimedValue = tuple[FeatureValue, int]
"""A value and its event time in epoch microseconds."""


class StoreUnavailable(UnavailableError):
    """The online store cannot serve the call now (down, unreachable, timed out, refusing).

    Every :class:`OnlineStore` raises this, and only this, for a storage failure;
    the message says which store and why.  Retrying later can succeed.
    """


class FeatureStatus(StrEnum):
    """Freshness of one online value at read time."""

    PRESENT = "present"
    MISSING = "missing"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class EntityWrite:
    """Feature values of one entity to store: name -> (value, event time in epoch µs)."""

    entity_id: str
    values: Mapping[str, TimedValue]


class FeatureRead(NamedTuple):
    """One feature of one entity as read: ``value`` is None unless PRESENT.

    A named tuple: a read builds one per feature per entity (1,600 for 100
    entities of 16 features), and a tuple is built ~3x faster than a frozen
    dataclass.
    """

    value: FeatureValue
    event_time_us: int | None
    status: FeatureStatus


MISSING = FeatureRead(None, None, FeatureStatus.MISSING)
"""The read of a feature that was never written (one shared instance)."""


def classify(value: FeatureValue, t_us: int, ttl_s: float, now: float) -> FeatureRead:
    """A stored value as read at ``now`` (epoch s): PRESENT, or STALE past ``ttl_s``."""
    if now - t_us / 1e6 > ttl_s:
        return FeatureRead(None, t_us, FeatureStatus.STALE)
    return FeatureRead(value, t_us, FeatureStatus.PRESENT)


class GenerationMarker(abc.ABC):
    """Optional capability: a token in the store that lives exactly as long as its data.

    The features worker rebuilds the online store from its own state when the
    token disappears (the store was wiped: ``FLUSHALL``, a restart without
    persistence, a failover to an empty replica).  Errors are :class:`StoreUnavailable`.
    """

    @abc.abstractmethod
    async def read(self) -> str | None:
        """The current token, None when there is none (the store was wiped or is new)."""

    @abc.abstractmethod
    async def claim(self, token: str) -> str:
        """Store ``token`` unless a token is already there; return the token now stored."""


class OnlineStore(abc.ABC):
    """Where the serving path reads features; the worker writes them.

    Implementations pass the shared conformance suite
    (:mod:`driftline.online_store.checks`) and raise :class:`StoreUnavailable` for
    storage failures.  A setting chooses one by its registered type name (see
    :mod:`driftline.online_store.registry`).
    """

    where: str = "the online store"
    """Which store this is and where, for log lines and errors (``Redis at 127.0.0.1:6379``)."""
    unreachable_hint: str = "Check features.online_store in the settings."
    """What an operator can do when the store does not answer at start."""
    generation_marker: GenerationMarker | None = None
    """Optional capability: the store's wipe detector, or None when it has none (the
    worker then rebuilds the store only when it starts)."""

    @abc.abstractmethod
    async def write(self, featureset: str, writes: Sequence[EntityWrite]) -> None:
        """Store the values of many entities; each feature only if its event time is not older.

        Raises :class:`StoreUnavailable` on a storage failure (the caller retries:
        writes are idempotent).
        """

    @abc.abstractmethod
    async def read(
        self,
        featureset: FeatureSetSpec,
        entity_ids: Sequence[str],
        names: Sequence[str],
        now: float,
    ) -> list[list[FeatureRead]]:
        """One row per entity id (in order), one :class:`FeatureRead` per name (in order).

        ``now`` is the reader's clock in epoch seconds; values older than the
        feature set's TTL are STALE.  Raises :class:`StoreUnavailable` on a
        storage failure.
        """

    async def ping(self) -> None:  # noqa: B027 - optional hook, nothing to check in memory
        """Raise :class:`StoreUnavailable` if the store cannot be reached."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


async def wait_until_reachable(
    store: OnlineStore, within_s: float, *, every_s: float = 0.5
) -> None:
    """Return once ``store.ping()`` succeeds; :class:`StoreUnavailable` naming the store, the
    last failure and :attr:`OnlineStore.unreachable_hint` when it has not within ``within_s``.

    Any exception from ``ping`` counts as not answering (refused, reset, loading, auth):
    at start, the one question is whether the store is there yet.
    """
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(within_s), wait=wait_fixed(every_s)
        ):
            with attempt:
                await store.ping()
    except RetryError as failed:
        last = failed.last_attempt.exception()
        raise StoreUnavailable(
            f"{store.where} did not answer PING within {within_s:.0f}s ({last}). "
            f"{store.unreachable_hint}"
        ) from last
