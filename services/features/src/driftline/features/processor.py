"""The core of the features worker: a batch of validated events in, effects out.

:class:`FeatureProcessor` is pure: it reads and updates entity states through a
mapping the caller owns and returns what must happen (vectors to publish,
online values to write, dead letters, states to persist).  The worker does
the I/O, in the order that makes replays idempotent (see ``worker.py``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from pydantic import ValidationError

from driftline.contracts.messages import (
    DeadLetter,
    DlqReason,
    FeatureValue,
    ValidEvent,
    utcnow,
)
from driftline.contracts.topics import EVENTS_VALID
from driftline.features.aggregates import DEFAULT_LATENESS_S, EntityState
from driftline.online_store import EntityWrite
from driftline.settings import KafkaSettings
from driftline.specs import FeatureSetCatalog, FeatureSetSpec, RecordRejected

__all__ = ["BatchOutcome", "FeatureProcessor", "SourceRecord", "state_key"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_us(t: datetime) -> int:
    delta = t - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


@functools.lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _iso_us(t_us: int) -> str:
    """Epoch µs as the contracts' RFC 3339 form (``2026-01-01T12:00:00.000000Z``)."""
    seconds, micros = divmod(t_us, 1_000_000)
    return f"{_iso_second(seconds)}.{micros:06d}Z"


def state_key(featureset: str, entity_id: str) -> str:
    """The table key of an entity's state within a feature set."""
    return f"{featureset}:{entity_id}"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record of ``driftline.events.valid`` as consumed."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    """Record headers (``traceparent`` among them when the event is traced)."""


@dataclass
class BatchOutcome:
    """Everything one batch must cause, in the form the I/O layer needs."""

    vectors: list[tuple[str, bytes]] = field(default_factory=list)
    """``(entity id, FeatureVector JSON)`` for ``driftline.features``, in input order."""
    vector_sources: list[int] = field(default_factory=list)
    """For each of :attr:`vectors`, the index of the source record it was computed from."""
    writes: dict[str, list[EntityWrite]] = field(default_factory=dict)
    """Online values per feature set: raw fields of each entity's newest event and
    its aggregates as of its newest event time."""
    states: dict[str, tuple[int, EntityState]] = field(default_factory=dict)
    """Changed states by table key, with the source partition they belong to."""
    dead_letters: list[tuple[bytes | None, DeadLetter]] = field(default_factory=list)
    """Records that could not be used, with their original key."""
    replayed: int = 0
    """Events skipped because their entity's state already includes them."""
    applied: int = 0


@dataclass(slots=True)
class _Newest:
    t_us: int
    raw: dict[str, FeatureValue]
    aggregates: dict[str, FeatureValue] | None
    """The event's aggregates while they are also the entity's current ones (the
    event is the entity's newest and nothing was applied after it)."""


class FeatureProcessor:
    """Applies events to entity states and says what to publish and store.

    ``states`` (passed to :meth:`process`) maps :func:`state_key` to
    :class:`EntityState`; in the worker it is the changelog-backed state table, so what
    is read there survives restarts through the changelog.

    An event whose offset is not newer than its entity state's ``offset`` was
    applied before (a redelivery after a crash) and is skipped: its vector and
    online values were made durable before that state was.
    """

    def __init__(
        self,
        catalog: FeatureSetCatalog,
        *,
        allowed_lateness_s: float = DEFAULT_LATENESS_S,
        keep_bytes: int = KafkaSettings().max_record_bytes,
    ) -> None:
        self.catalog = catalog
        self.allowed_lateness_s = allowed_lateness_s
        self.keep_bytes = keep_bytes
        """How much of a record a dead letter keeps (``kafka.max_record_bytes``): a dead
        letter of any record then fits on the dead-letter topic."""

    def new_state(self, spec: FeatureSetSpec) -> EntityState:
        """An empty state for an entity of ``spec``."""
        return EntityState(spec, self.allowed_lateness_s)

    def process(
        self,
        records: Sequence[SourceRecord],
        states: MutableMapping[str, EntityState],
    ) -> BatchOutcome:
        """Apply ``records`` (in partition order) to ``states`` and return the effects.

        Never raises for a bad record: it becomes a dead letter.
        """
        out = BatchOutcome()
        newest: dict[str, tuple[FeatureSetSpec, str, _Newest]] = {}
        produced_iso = _iso_us(_epoch_us(utcnow()))
        for index, rec in enumerate(records):
            try:
                event = ValidEvent.model_validate_json(rec.value)
            except ValidationError as exc:
                first = exc.errors()[0]
                reason = (
                    DlqReason.UNPARSEABLE if first["type"] == "json_invalid" else DlqReason.SCHEMA
                )
                out.dead_letters.append((rec.key, self.dead_letter(rec, reason, str(exc))))
                continue
            spec = self.catalog.get(event.featureset)
            if spec is None:
                known = ", ".join(s.name for s in self.catalog) or "none"
                detail = f"feature set {event.featureset!r} is not registered here; known: {known}"
                out.dead_letters.append(
                    (rec.key, self.dead_letter(rec, DlqReason.UNKNOWN_FEATURESET, detail))
                )
                continue
            try:
                raw = spec.validate_features(event.features)
            except RecordRejected as exc:
                out.dead_letters.append((rec.key, self.dead_letter(rec, exc.reason, exc.detail)))
                continue
            key = state_key(spec.name, event.entity_id)
            state = states.get(key)
            if state is None:
                state = self.new_state(spec)
            elif rec.offset <= state.offset:
                out.replayed += 1
                continue
            t_us = _epoch_us(event.event_time)
            aggregates = state.apply(t_us / 1e6, raw)
            state.offset = rec.offset
            states[key] = state
            out.states[key] = (rec.partition, state)
            out.applied += 1
            # A FeatureVector, serialised directly: every field comes from
            # validated values (the event, the spec's coerced raw fields, the
            # aggregates), and pydantic's serialiser cost more than the rest of
            # the event's processing (test_processor checks it parses back).
            vector = orjson.dumps(
                {
                    "event_id": event.event_id,
                    "entity_id": event.entity_id,
                    "event_time": _iso_us(t_us),
                    "featureset": spec.name,
                    "featureset_version": spec.version,
                    "values": {**raw, **aggregates},
                    "produced_at": produced_iso,
                }
            )
            out.vectors.append((event.entity_id, vector))
            out.vector_sources.append(index)
            seen = newest.get(key)
            if seen is None or t_us >= seen[2].t_us:
                current = aggregates if state.max_time == t_us / 1e6 else None
                newest[key] = (spec, event.entity_id, _Newest(t_us, raw, current))
            else:
                seen[2].aggregates = None  # a late event changed the current values
        for key, (spec, entity_id, last) in newest.items():
            state = states[key]
            t_us = last.t_us
            values: dict[str, tuple[FeatureValue, int]] = {
                name: (v, t_us) for name, v in last.raw.items()
            }
            max_us = round((state.max_time or 0.0) * 1e6)
            current = last.aggregates if last.aggregates is not None else state.current()
            for name, v in current.items():
                values[name] = (v, max_us)
            out.writes.setdefault(spec.name, []).append(EntityWrite(entity_id, values))
        return out

    def dead_letter(self, rec: SourceRecord, reason: DlqReason, detail: str) -> DeadLetter:
        """The dead letter of ``rec`` (its first :attr:`keep_bytes` kept, with its place)."""
        return DeadLetter.of(
            rec.value,
            keep_bytes=self.keep_bytes,
            reason=reason,
            detail=detail,
            original_key=rec.key.decode("utf-8", "replace") if rec.key is not None else None,
            source="kafka",
            source_topic=EVENTS_VALID.name,
            source_partition=rec.partition,
            source_offset=rec.offset,
            kind="event",
        )
