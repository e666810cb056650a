"""The ingestion core: bytes in, a validated record or a dead letter out.

No sockets here; the Kafka loop and the HTTP routes are thin transports over
:meth:`IngestionCore.process`.  Whatever the bytes and the key, every record
comes out as exactly one :class:`Accepted` or :class:`Rejected`, and a dead
letter always fits on the dead-letter topic: of an oversized record it keeps the
first ``max_record_bytes`` (with the size and sha256 of the whole), of a huge key
its first :data:`KEY_CHARS` characters.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from driftline.contracts.messages import (
    DeadLetter,
    DlqReason,
    RawEvent,
    RawLabel,
    ValidEvent,
    ValidLabel,
    utcnow,
)
from driftline.ingestion.dedup import DedupStore
from driftline.specs import FeatureSetCatalog, FeatureSetSpec, RecordRejected

log = logging.getLogger(__name__)

Kind = Literal["event", "label"]

KEY_CHARS = 1024
"""Most characters of a record's key a dead letter keeps (and is keyed by).

A key is not part of the contract (valid records are keyed by entity id), but a
dead letter carries it; bounding it keeps the letter within the topic's limit
whatever the producer sent (a Kafka key may be almost as large as the record)."""


@dataclass(frozen=True)
class Source:
    """Where a record came from; ``owner`` identifies this exact record for dedup."""

    kind: Kind
    via: Literal["kafka", "http"]
    owner: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def where(self) -> str:
        """``topic[partition]@offset`` (or the HTTP owner), for log lines."""
        if self.topic is not None:
            return f"{self.topic}[{self.partition}]@{self.offset}"
        return self.owner

    def letter_fields(self) -> dict[str, Any]:
        """The fields of a :class:`DeadLetter` that say where its record came from."""
        return {
            "source": self.via,
            "source_topic": self.topic,
            "source_partition": self.partition,
            "source_offset": self.offset,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class Incoming:
    """A record as received: its bytes, its key and its origin."""

    value: bytes | None
    key: bytes | None
    source: Source


@dataclass(frozen=True)
class Accepted:
    """A valid record and the key it is written under (the entity id)."""

    record: ValidEvent | ValidLabel
    key: str

    @property
    def claim(self) -> str:
        """Its dedup claim key: ``event:<id>`` or ``label:<id>``."""
        kind = "event" if isinstance(self.record, ValidEvent) else "label"
        return f"{kind}:{self.record.event_id}"


@dataclass(frozen=True)
class Rejected:
    """A dead letter and the key it is written under (the original key, bounded)."""

    letter: DeadLetter
    key: str | None

    @property
    def reason(self) -> DlqReason:
        """Why it was rejected."""
        return self.letter.reason


Outcome = Accepted | Rejected


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _bounded_key(key: bytes | None) -> tuple[str | None, str]:
    """The key as a dead letter keeps it, and a note for the detail when it was cut."""
    if key is None:
        return None, ""
    # A UTF-8 character is at most 4 bytes: decoding the first 4 * KEY_CHARS bytes
    # gives every character kept, without decoding a key of most of a megabyte.
    text = key[: 4 * KEY_CHARS].decode("utf-8", "replace")
    if len(text) <= KEY_CHARS and len(key) <= 4 * KEY_CHARS:
        return text, ""
    return text[:KEY_CHARS], f" (its key of {len(key)} bytes is kept to {KEY_CHARS} characters)"


class IngestionCore:
    """Validates raw events and labels against the registered feature sets."""

    def __init__(
        self, catalog: FeatureSetCatalog, dedup: DedupStore, *, max_record_bytes: int
    ) -> None:
        self.catalog = catalog
        self.dedup = dedup
        self.max_record_bytes = max_record_bytes

    async def process(self, batch: Sequence[Incoming]) -> list[Outcome]:
        """Classify every record of ``batch``, in order: one outcome per record.

        Never raises because of a record, whatever its bytes or key.  Raises
        :class:`~driftline.contracts.errors.UnavailableError` only when the dedup
        store is unreachable, in which case nothing of the batch may be written
        and the whole batch is to be retried.  Accepted records hold a dedup claim
        owned by ``source.owner``, so processing the same record again (a retry,
        a replay after a crash) accepts it again rather than calling it a duplicate.
        """
        now = utcnow()
        staged = [self._classify(item, now) for item in batch]
        claims = [(i, o) for i, o in enumerate(staged) if isinstance(o, Accepted)]
        granted = await self.dedup.claim_many([(o.claim, batch[i].source.owner) for i, o in claims])
        for (i, accepted), ok in zip(claims, granted, strict=True):
            if not ok:
                staged[i] = self.reject(
                    batch[i],
                    DlqReason.DUPLICATE,
                    f"{accepted.record.event_id} was already accepted within the dedup window",
                    now=now,
                )
        return staged

    async def release(self, items: Sequence[Incoming], outcomes: Sequence[Outcome]) -> None:
        """Give up the dedup claims of accepted records that were not written after all.

        A transport calls it when it could not write records it had processed (the
        broker went away mid-request), so that sending them again is not taken
        for a duplicate.  Raises ``UnavailableError`` when the store is unreachable.
        """
        claims = [
            (o.claim, item.source.owner)
            for item, o in zip(items, outcomes, strict=True)
            if isinstance(o, Accepted)
        ]
        await self.dedup.release_many(claims)

    def reject(
        self,
        item: Incoming,
        reason: DlqReason,
        detail: str,
        *,
        now: datetime | None = None,
        keep_bytes: int | None = None,
    ) -> Rejected:
        """The dead letter of ``item``, its key bounded to :data:`KEY_CHARS`.

        It keeps at most ``keep_bytes`` of the value (``max_record_bytes`` unless
        given).  Transports also use it for a record they cannot write
        (:func:`~driftline.ingestion.writer.fault_letter`).
        """
        key, key_note = _bounded_key(item.key)
        letter = DeadLetter.of(
            item.value or b"",
            keep_bytes=self.max_record_bytes if keep_bytes is None else keep_bytes,
            reason=reason,
            detail=detail + key_note,
            original_key=key,
            received_at=now or utcnow(),
            **item.source.letter_fields(),
        )
        return Rejected(letter, key)

    def unreadable(self, source: Source, detail: str) -> Rejected:
        """The dead letter of a record the Kafka client could not decode at all.

        Its bytes are unknown here (``truncated`` with nothing kept, no size or
        digest); the record stays at its source offset for the topic's retention.
        """
        letter = DeadLetter(
            original_b64="",
            truncated=True,
            reason=DlqReason.UNPARSEABLE,
            detail=detail,
            received_at=utcnow(),
            **source.letter_fields(),
        )
        return Rejected(letter, None)

    def _classify(self, item: Incoming, now: datetime) -> Outcome:
        try:
            return self._validate(item, now)
        except Exception as exc:
            # Isolates this one record: whatever a record makes validation raise, it
            # is dead-lettered with the error and the rest of the batch goes on.
            log.error(
                "processing the %s at %s raised %s; it is dead-lettered as processing_error",
                item.source.kind,
                item.source.where(),
                type(exc).__name__,
                exc_info=exc,
            )
            return self.reject(
                item,
                DlqReason.PROCESSING_ERROR,
                f"validating it raised {type(exc).__name__}: {exc}",
                now=now,
            )

    def _validate(self, item: Incoming, now: datetime) -> Outcome:
        if item.value is None:
            return self.reject(
                item,
                DlqReason.UNPARSEABLE,
                "not JSON: the record has no value (a tombstone); "
                f"{'an event' if item.source.kind == 'event' else 'a label'} is a JSON object",
                now=now,
            )
        raw = item.value
        if len(raw) > self.max_record_bytes:
            return self.reject(
                item,
                DlqReason.TOO_LARGE,
                f"{len(raw)} bytes is over the limit of {self.max_record_bytes} "
                "(kafka.max_record_bytes)",
                now=now,
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return self.reject(
                item,
                DlqReason.UNPARSEABLE,
                f"not UTF-8: {exc.reason} at byte {exc.start}",
                now=now,
            )
        try:
            # Python's parser accepts NaN/Infinity; they are caught as constraint
            # violations below instead of failing the whole record as garbage.
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            return self.reject(
                item, DlqReason.UNPARSEABLE, f"not JSON: {exc.msg} at char {exc.pos}", now=now
            )
        except RecursionError:
            return self.reject(
                item,
                DlqReason.UNPARSEABLE,
                "not JSON that can be read: arrays or objects nested too deeply",
                now=now,
            )
        except ValueError:
            # Python refuses to convert integers of more digits than this (a guard
            # against quadratic-time parsing); no field could take such a number.
            return self.reject(
                item,
                DlqReason.UNPARSEABLE,
                "not JSON that can be read: an integer has more than "
                f"{sys.get_int_max_str_digits()} digits",
                now=now,
            )
        if not isinstance(doc, dict):
            return self.reject(
                item,
                DlqReason.UNPARSEABLE,
                f"expected a JSON object, got {type(doc).__name__}",
                now=now,
            )
        model = RawEvent if item.source.kind == "event" else RawLabel
        try:
            parsed = model.model_validate(doc)
        except ValidationError as exc:
            return self.reject(item, DlqReason.SCHEMA, _describe(exc), now=now)
        try:
            record = _checked(parsed, self.catalog.resolve(parsed.featureset), now)
        except RecordRejected as exc:
            return self.reject(item, exc.reason, exc.detail, now=now)
        return Accepted(record, parsed.entity_id)


def _checked(
    raw: RawEvent | RawLabel, spec: FeatureSetSpec, now: datetime
) -> ValidEvent | ValidLabel:
    """The valid record of ``raw`` under ``spec``; :class:`RecordRejected` says what is off."""
    if isinstance(raw, RawEvent):
        return ValidEvent(
            event_id=raw.event_id,
            entity_id=raw.entity_id,
            event_time=raw.timestamp,
            features=spec.validate_features(raw.features),
            featureset=spec.name,
            featureset_version=spec.version,
            ingested_at=now,
        )
    return ValidLabel(
        event_id=raw.event_id,
        entity_id=raw.entity_id,
        event_time=raw.timestamp,
        label=spec.check_label(raw.label),
        ingested_at=now,
        featureset=spec.name,
    )
