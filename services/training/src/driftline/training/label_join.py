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

Memory: a waiting vector is held packed (:class:`_Waiting`: its numbers in one
``bytes``, its key order shared with every vector of the same shape), a few hundred
bytes instead of the ~2.5 KB of a parsed :class:`FeatureVector`, because the join
holds rate times allowed lateness of them.  ``max_pending`` caps each side besides:
past it the oldest vector (or orphan label) is dropped and counted, so a trainer's
memory stays bounded whatever the rate; a dropped vector's label, when it comes, is
an orphan that never joins.

No sockets here; the Kafka transport feeds :meth:`LabelJoin.add_vector` and
:meth:`LabelJoin.add_label`.
"""

from __future__ import annotations

import heapq
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from driftline.contracts.messages import FeatureVector, ValidLabel

P = TypeVar("P")

log = logging.getLogger(__name__)


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
    vectors_over_cap: int = 0
    """Vectors dropped unlabeled (oldest event time first) because ``max_pending`` were
    already waiting; a label of one of them is then an orphan that never joins."""
    orphans_over_cap: int = 0
    """Orphan labels dropped (oldest event time first) because ``max_pending`` labels
    were already waiting for their vectors."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_HEADER = "<qqqq"
"""Packed before the values: event time and produced-at (epoch µs), partition, offset."""
_HEADER_SIZE = struct.calcsize(_HEADER)
_NO_POSITION = -1
_UTF8, _RAW = "utf-8", "surrogatepass"
"""Entity ids are kept as UTF-8 (any str, even one with a lone surrogate, round-trips)."""
_INT64 = (-(2**63), 2**63)
_SCHEMA_CACHE = 4096
"""Distinct vector shapes remembered; past this the cache starts over (vectors already
packed keep their shape, only sharing with new ones is lost)."""


class _Shape:
    """What every vector of one shape shares: feature set, its version, the value names
    in order and each value's kind, and the struct that packs them.

    Kinds: ``d`` float, ``q`` int within 64 bits, ``?`` bool (all three packed), ``n``
    None (nothing packed), ``o`` anything else (a string, a bigger int: kept as is).
    Every value comes back as the same type and value it went in as (NaN included).
    """

    __slots__ = ("featureset", "kinds", "names", "struct", "version")

    def __init__(self, featureset: str, version: int, names: tuple[str, ...], kinds: str):
        self.featureset = featureset
        self.version = version
        self.names = names
        self.kinds = kinds
        self.struct = struct.Struct(_HEADER + "".join(k for k in kinds if k in "dq?"))


def _kind(value: Any) -> str:
    t = type(value)
    if t is float:
        return "d"
    if t is bool:
        return "?"
    if t is int and _INT64[0] <= value < _INT64[1]:
        return "q"
    if value is None:
        return "n"
    return "o"


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND


class _Waiting(Generic[P]):
    """A vector waiting in the join, packed: its event id is the key it is held under,
    its entity id follows the packed numbers in ``data`` (UTF-8)."""

    __slots__ = ("attachment", "data", "extras", "shape", "topic")

    def __init__(
        self, shape: _Shape, data: bytes, extras: tuple[Any, ...] | None, topic: str | None,
        attachment: P,
    ) -> None:  # fmt: skip
        self.shape = shape
        self.data = data
        self.extras = extras
        self.topic = topic
        self.attachment = attachment

    def position(self) -> Position | None:
        if self.topic is None:
            return None
        _, _, partition, offset = struct.unpack_from(_HEADER, self.data)
        return Position(self.topic, partition, offset)

    def vector(self, event_id: str) -> FeatureVector:
        """The vector as it came in (equal to it, value for value and type for type)."""
        shape = self.shape
        numbers = shape.struct.unpack_from(self.data)
        packed = iter(numbers[4:])
        others = iter(self.extras or ())
        values: dict[str, Any] = {}
        for name, kind in zip(shape.names, shape.kinds, strict=True):
            if kind == "n":
                values[name] = None
            elif kind == "o":
                values[name] = next(others)
            else:
                values[name] = next(packed)
        # Built without validation: every field is one a validated vector had.
        return FeatureVector.model_construct(
            event_id=event_id,
            entity_id=self.data[shape.struct.size :].decode(_UTF8, _RAW),
            event_time=_EPOCH + numbers[0] * _MICROSECOND,
            featureset=shape.featureset,
            featureset_version=shape.version,
            values=values,
            produced_at=_EPOCH + numbers[1] * _MICROSECOND,
        )


_UNSET = object()
"""A label's ``featureset`` that was absent (not null) in the record."""


class _Orphan:
    """A label waiting for its vector, packed like :class:`_Waiting` (a parsed
    :class:`ValidLabel` with its position is ~1.6 KB; this, ~350 bytes)."""

    __slots__ = ("data", "featureset", "topic", "value")

    def __init__(self, label: ValidLabel, pos: Position | None, topics: dict[str, str]) -> None:
        self.value = label.label
        fields_set = label.model_fields_set
        self.featureset = label.featureset if "featureset" in fields_set else _UNSET
        if pos is None:
            self.topic, partition, offset = None, _NO_POSITION, _NO_POSITION
        else:
            self.topic = topics.setdefault(pos.topic, pos.topic)
            partition, offset = pos.partition, pos.offset
        self.data = struct.pack(
            _HEADER, _micros(label.event_time), _micros(label.ingested_at), partition, offset
        ) + label.entity_id.encode(_UTF8, _RAW)

    @property
    def pos(self) -> Position | None:
        if self.topic is None:
            return None
        _, _, partition, offset = struct.unpack_from(_HEADER, self.data)
        return Position(self.topic, partition, offset)

    def label(self, event_id: str) -> ValidLabel:
        """The label as it came in (equal to it, with the same fields set)."""
        event_us, ingested_us, _, _ = struct.unpack_from(_HEADER, self.data)
        fields: dict[str, Any] = {
            "event_id": event_id,
            "entity_id": self.data[_HEADER_SIZE:].decode(_UTF8, _RAW),
            "event_time": _EPOCH + event_us * _MICROSECOND,
            "label": self.value,
            "ingested_at": _EPOCH + ingested_us * _MICROSECOND,
        }
        if self.featureset is not _UNSET:
            fields["featureset"] = self.featureset
        # Built without validation: every field is one a validated label had.
        return ValidLabel.model_construct(**fields)


_Deadline = tuple[float, str]
"""``(at, event_id)``: a heap entry (ties go by event id; no sequence number, which
would cost another 36 bytes a waiting vector)."""


class LabelJoin(Generic[P]):
    """Join buffer with a watermark; see the module docstring for the rules.

    ``max_pending`` (None: no cap, for a replay that must see its whole window) is the
    most vectors, and separately the most orphan labels, held at once; ``name`` names
    the join in the warning that the cap dropped records, logged at most once a minute
    of ``clock``.

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

    CAP_LOG_EVERY_S = 60.0
    """The warning that the cap dropped records is logged at most this often."""

    def __init__(
        self,
        *,
        allowed_lateness_s: float,
        orphan_retention_s: float,
        expired_capacity: int = 100_000,
        seen_capacity: int = 1_000_000,
        max_pending: int | None = None,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_pending is not None and max_pending < 1:
            raise ValueError(f"max_pending must be at least 1 (or None: no cap), not {max_pending}")
        self.allowed_lateness_s = allowed_lateness_s
        self.orphan_retention_s = orphan_retention_s
        self.expired_capacity = expired_capacity
        self.seen_capacity = seen_capacity
        self.max_pending = max_pending
        self.name = name
        self.clock = clock
        self.stats = JoinStats()
        self._pending: dict[str, _Waiting[P]] = {}
        self._pending_deadlines: list[_Deadline] = []
        self._expired: OrderedDict[str, _Waiting[P]] = OrderedDict()
        self._orphans: dict[str, _Orphan] = {}
        self._orphan_deadlines: list[_Deadline] = []
        self._joined: OrderedDict[str, float] = OrderedDict()
        self._max_event_ts: float | None = None
        self._shapes: dict[tuple[str, int, tuple[str, ...], str], _Shape] = {}
        self._topics: dict[str, str] = {}
        self._cap_logged_at: float | None = None
        self._cap_logged: tuple[int, int] = (0, 0)

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
        held = [p.position() for p in self._pending.values()]
        held += [o.pos for o in self._orphans.values()]
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
        attachment = attach(vector)
        orphan = self._orphans.pop(eid, None)
        if orphan is not None:
            self.stats.orphans_joined += 1
            result: JoinedExample[P] | None = self._joined_example(
                vector, pos, attachment, orphan.label(eid), orphan.pos, late=False
            )
        else:
            self._pending[eid] = self._pack(vector, pos, attachment)
            heapq.heappush(self._pending_deadlines, (ts, eid))
            result = None
        self._advance()
        self._cap()
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
            return self._complete(eid, entry, label, pos, late=False)
        expired = self._expired.pop(eid, None)
        if expired is not None:
            self.stats.late_labels += 1
            return self._complete(eid, expired, label, pos, late=True)
        self.stats.orphan_labels += 1
        self._orphans[eid] = _Orphan(label, pos, self._topics)
        heapq.heappush(
            self._orphan_deadlines, (label.event_time.timestamp() + self.orphan_retention_s, eid)
        )
        self._advance()
        self._cap()
        return None

    # -- internals ------------------------------------------------------------------

    def _pack(self, vector: FeatureVector, pos: Position | None, attachment: P) -> _Waiting[P]:
        values = vector.values
        names = tuple(values)
        kinds = "".join(map(_kind, values.values()))
        key = (vector.featureset, vector.featureset_version, names, kinds)
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= _SCHEMA_CACHE:
                self._shapes.clear()
            shape = self._shapes[key] = _Shape(*key)
        numbers = [v for v, k in zip(values.values(), kinds, strict=True) if k in "dq?"]
        extras = tuple(v for v, k in zip(values.values(), kinds, strict=True) if k == "o")
        if pos is None:
            topic, partition, offset = None, _NO_POSITION, _NO_POSITION
        else:
            topic = self._topics.setdefault(pos.topic, pos.topic)
            partition, offset = pos.partition, pos.offset
        data = shape.struct.pack(
            _micros(vector.event_time), _micros(vector.produced_at), partition, offset, *numbers
        )
        return _Waiting(
            shape, data + vector.entity_id.encode(_UTF8, _RAW), extras or None, topic, attachment
        )

    def _complete(
        self, eid: str, entry: _Waiting[P], label: ValidLabel, pos: Position | None, *, late: bool
    ) -> JoinedExample[P]:
        vector = entry.vector(eid)
        return self._joined_example(
            vector, entry.position(), entry.attachment, label, pos, late=late
        )

    def _joined_example(
        self,
        vector: FeatureVector,
        vector_pos: Position | None,
        attachment: P,
        label: ValidLabel,
        label_pos: Position | None,
        *,
        late: bool,
    ) -> JoinedExample[P]:
        self.stats.joined += 1
        self._joined[vector.event_id] = vector.event_time.timestamp()
        return JoinedExample(vector, label, attachment, vector_pos, label_pos, late)

    def _advance(self) -> None:
        wm = self.watermark
        if wm is None:
            return
        while self._pending_deadlines and self._pending_deadlines[0][0] < wm:
            eid = heapq.heappop(self._pending_deadlines)[1]
            entry = self._pending.pop(eid, None)
            if entry is None:
                continue  # joined meanwhile
            self.stats.evicted_unlabeled += 1
            self._expired[eid] = entry
            if len(self._expired) > self.expired_capacity:
                self._expired.popitem(last=False)
                self.stats.expired_dropped += 1
        while self._orphan_deadlines and self._orphan_deadlines[0][0] < wm:
            eid = heapq.heappop(self._orphan_deadlines)[1]
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

    def _cap(self) -> None:
        """Drop the oldest records past ``max_pending`` on either side, and keep the
        deadline heaps from outgrowing what they index: a record that joined leaves its
        deadline behind until the watermark passes it, which is rate times lateness entries."""
        self._pending_deadlines = _compacted(self._pending_deadlines, self._pending)
        self._orphan_deadlines = _compacted(self._orphan_deadlines, self._orphans)
        cap = self.max_pending
        if cap is None:
            return
        while len(self._pending) > cap:
            eid = heapq.heappop(self._pending_deadlines)[1]
            if self._pending.pop(eid, None) is not None:
                self.stats.vectors_over_cap += 1
        while len(self._orphans) > cap:
            eid = heapq.heappop(self._orphan_deadlines)[1]
            if self._orphans.pop(eid, None) is not None:
                self.stats.orphans_over_cap += 1
        dropped = (self.stats.vectors_over_cap, self.stats.orphans_over_cap)
        if dropped != self._cap_logged:
            now = self.clock()
            if self._cap_logged_at is None or now - self._cap_logged_at >= self.CAP_LOG_EVERY_S:
                self._log_cap(dropped)
                self._cap_logged_at, self._cap_logged = now, dropped

    def _log_cap(self, dropped: tuple[int, int]) -> None:
        vectors = dropped[0] - self._cap_logged[0]
        labels = dropped[1] - self._cap_logged[1]
        log.warning(
            "label join%s holds its cap of %d records a side (max_pending): dropped the "
            "oldest %d unlabeled vectors and %d orphan labels since the last warning (%d and "
            "%d in all); their labels will not be learned. Labels come later than the rate "
            "lets the join wait: raise training.label_join_max_pending (memory) or lower "
            "training.allowed_lateness_s",
            f" of {self.name}" if self.name else "", self.max_pending, vectors, labels,
            dropped[0], dropped[1],
        )  # fmt: skip


def _compacted(heap: list[_Deadline], live: dict[str, Any]) -> list[_Deadline]:
    """``heap`` without the deadlines of records no longer in ``live``, once they are
    more than half of it (amortised O(1) a record)."""
    if len(heap) <= 2 * len(live) + 1024:
        return heap
    kept = [d for d in heap if d[1] in live]
    heapq.heapify(kept)
    return kept
