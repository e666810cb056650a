"""The join of feature vectors with their (late, out-of-order) labels, by event id.

Vectors wait in a buffer until their label arrives.  The watermark is the
newest vector event time seen minus the allowed lateness; a vector older than
the watermark that is still unlabeled is *evicted* (counted) and moved to a
bounded cache of expired vectors, so that a label arriving after eviction still
joins (counted as *late*).  A label whose vector is unknown is an *orphan*: it
waits (counted) for its vector until the watermark passes its event time by the
orphan retention, then it is dropped and counted as expired.  Duplicate vectors
and labels (the feature log is at-least-once) are recognised by event id and
counted, never learned twice.

No sockets here; the Kafka transport feeds :meth:`LabelJoin.add_vector` and
:meth:`LabelJoin.add_label`.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from driftline.contracts.messages import FeatureVector, ValidLabel

P = TypeVar("P")


@dataclass(frozen=True)
class Position:
    """Where a record was read: topic, partition, offset."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class JoinedExample(Generic[P]):
    """A feature vector with its label, and what was attached to the vector on arrival."""

    vector: FeatureVector
    label: ValidLabel
    attachment: P
    vector_pos: Position | None
    label_pos: Position | None
    late: bool = False
    """True when the label arrived after the vector had been evicted."""

    @property
    def event_id(self) -> str:
        """The event id both sides share."""
        return self.vector.event_id

    @property
    def event_time(self) -> datetime:
        """The vector's event time."""
        return self.vector.event_time


@dataclass
class JoinStats:
    """Counters of everything the join saw; every vector and label lands in one of them."""

    vectors: int = 0
    labels: int = 0
    joined: int = 0
    duplicate_vectors: int = 0
    duplicate_labels: int = 0
    evicted_unlabeled: int = 0
    """Vectors whose label had not come when the watermark passed them."""
    late_labels: int = 0
    """Labels that arrived after their vector was evicted (still joined)."""
    orphan_labels: int = 0
    """Labels that arrived before (or without) their vector."""
    orphans_joined: int = 0
    orphans_expired: int = 0
    """Orphan labels dropped after waiting the retention for a vector that never came."""
    expired_dropped: int = 0
    """Evicted vectors pushed out of the bounded expired cache."""


@dataclass
class _Pending(Generic[P]):
    vector: FeatureVector
    pos: Position | None
    attachment: P


@dataclass
class _Orphan:
    label: ValidLabel
    pos: Position | None


@dataclass(order=True)
class _Deadline:
    at: float
    seq: int
    event_id: str = field(compare=False)


class LabelJoin(Generic[P]):
    """Join buffer with a watermark; see the module docstring for the rules.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> v = FeatureVector(event_id="e1", entity_id="c", event_time=t, featureset="f",
    ...                   featureset_version=1, values={"x": 1.0}, produced_at=t)
    >>> lab = ValidLabel(event_id="e1", entity_id="c", event_time=t, label=1, ingested_at=t)
    >>> join: LabelJoin[str] = LabelJoin(allowed_lateness_s=60, orphan_retention_s=60)
    >>> join.add_label(lab, None) is None        # an orphan: waits for its vector
    True
    >>> join.add_vector(v, None, lambda vec: "pred").attachment
    'pred'
    """

    def __init__(
        self,
        *,
        allowed_lateness_s: float,
        orphan_retention_s: float,
        expired_capacity: int = 100_000,
        seen_capacity: int = 1_000_000,
    ) -> None:
        self.allowed_lateness_s = allowed_lateness_s
        self.orphan_retention_s = orphan_retention_s
        self.expired_capacity = expired_capacity
        self.seen_capacity = seen_capacity
        self.stats = JoinStats()
        self._pending: dict[str, _Pending[P]] = {}
        self._pending_deadlines: list[_Deadline] = []
        self._expired: OrderedDict[str, _Pending[P]] = OrderedDict()
        self._orphans: dict[str, _Orphan] = {}
        self._orphan_deadlines: list[_Deadline] = []
        self._joined: OrderedDict[str, float] = OrderedDict()
        self._max_event_ts: float | None = None
        self._seq = 0

    # -- state ----------------------------------------------------------------------

    @property
    def watermark(self) -> float | None:
        """Epoch seconds: vectors older than this and unlabeled are evicted (None before any)."""
        if self._max_event_ts is None:
            return None
        return self._max_event_ts - self.allowed_lateness_s

    @property
    def pending(self) -> int:
        """Vectors waiting for their label."""
        return len(self._pending)

    @property
    def orphans(self) -> int:
        """Labels waiting for their vector."""
        return len(self._orphans)

    def oldest_unfinished(self) -> dict[tuple[str, int], int]:
        """Per ``(topic, partition)``, the smallest offset of a record still waiting to join.

        A consumer may commit up to (not past) these offsets without losing a
        record the join still holds.
        """
        out: dict[tuple[str, int], int] = {}
        held = [p.pos for p in self._pending.values()] + [o.pos for o in self._orphans.values()]
        for pos in held:
            if pos is None:
                continue
            key = (pos.topic, pos.partition)
            if key not in out or pos.offset < out[key]:
                out[key] = pos.offset
        return out

    # -- input ----------------------------------------------------------------------

    def add_vector(
        self, vector: FeatureVector, pos: Position | None, attach: Callable[[FeatureVector], P]
    ) -> JoinedExample[P] | None:
        """Take a vector; returns the joined example when its label was already waiting.

        ``attach`` is called once per accepted (non-duplicate) vector, on arrival:
        the learner uses it to make its prequential prediction before the label is
        known.  Duplicates return None and are counted.
        """
        eid = vector.event_id
        self.stats.vectors += 1
        if eid in self._pending or eid in self._expired or eid in self._joined:
            self.stats.duplicate_vectors += 1
            return None
        ts = vector.event_time.timestamp()
        if self._max_event_ts is None or ts > self._max_event_ts:
            self._max_event_ts = ts
        entry = _Pending(vector, pos, attach(vector))
        orphan = self._orphans.pop(eid, None)
        if orphan is not None:
            self.stats.orphans_joined += 1
            result = self._complete(entry, orphan.label, orphan.pos, late=False)
        else:
            self._pending[eid] = entry
            self._seq += 1
            heapq.heappush(self._pending_deadlines, _Deadline(ts, self._seq, eid))
            result = None
        self._advance()
        return result

    def add_label(self, label: ValidLabel, pos: Position | None) -> JoinedExample[P] | None:
        """Take a label; returns the joined example when its vector is known."""
        eid = label.event_id
        self.stats.labels += 1
        if eid in self._joined or eid in self._orphans:
            self.stats.duplicate_labels += 1
            return None
        entry = self._pending.pop(eid, None)
        if entry is not None:
            return self._complete(entry, label, pos, late=False)
        expired = self._expired.pop(eid, None)
        if expired is not None:
            self.stats.late_labels += 1
            return self._complete(expired, label, pos, late=True)
        self.stats.orphan_labels += 1
        self._orphans[eid] = _Orphan(label, pos)
        self._seq += 1
        heapq.heappush(
            self._orphan_deadlines,
            _Deadline(label.event_time.timestamp() + self.orphan_retention_s, self._seq, eid),
        )
        self._advance()
        return None

    # -- internals ------------------------------------------------------------------

    def _complete(
        self, entry: _Pending[P], label: ValidLabel, pos: Position | None, *, late: bool
    ) -> JoinedExample[P]:
        self.stats.joined += 1
        eid = entry.vector.event_id
        self._joined[eid] = entry.vector.event_time.timestamp()
        return JoinedExample(entry.vector, label, entry.attachment, entry.pos, pos, late)

    def _advance(self) -> None:
        wm = self.watermark
        if wm is None:
            return
        while self._pending_deadlines and self._pending_deadlines[0].at < wm:
            eid = heapq.heappop(self._pending_deadlines).event_id
            entry = self._pending.pop(eid, None)
            if entry is None:
                continue  # joined meanwhile
            self.stats.evicted_unlabeled += 1
            self._expired[eid] = entry
            if len(self._expired) > self.expired_capacity:
                self._expired.popitem(last=False)
                self.stats.expired_dropped += 1
        while self._orphan_deadlines and self._orphan_deadlines[0].at < wm:
            eid = heapq.heappop(self._orphan_deadlines).event_id
            if self._orphans.pop(eid, None) is not None:
                self.stats.orphans_expired += 1
        # Joined ids are remembered (to recognise duplicates) for as long as a
        # duplicate could plausibly still arrive, and never beyond the capacity.
        horizon = wm - self.orphan_retention_s
        while self._joined:
            eid, ts = next(iter(self._joined.items()))
            if ts >= horizon and len(self._joined) <= self.seen_capacity:
                break
            self._joined.popitem(last=False)
