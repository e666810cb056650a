"""The ingestion core: bytes in, a validated record or a dead letter out.

No sockets here; the Kafka loop and the HTTP routes are thin transports over
:meth:`IngestionCore.process`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

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
from driftline.specs import FeatureSetCatalog, RecordRejected

Kind = Literal["event", "label"]


@dataclass(frozen=True)
class Source:
    """Where a record came from; ``owner`` identifies this exact record for dedup."""

    kind: Kind
    via: Literal["kafka", "http"]
    owner: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


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


@dataclass(frozen=True)
class Rejected:
    """A dead letter and the key it is written under (the original key)."""

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


class IngestionCore:
    """Validates raw events and labels against the registered feature sets."""

    def __init__(
        self, catalog: FeatureSetCatalog, dedup: DedupStore, *, max_record_bytes: int
    ) -> None:
        self.catalog = catalog
        self.dedup = dedup
        self.max_record_bytes = max_record_bytes

    async def process(self, batch: Sequence[Incoming]) -> list[Outcome]:
        """Classify every record of ``batch``, in order; never raises for a bad record.

        Raises :class:`~driftline.contracts.errors.UnavailableError` only when the
        dedup store is unreachable, in which case nothing of the batch may be
        written and the whole batch is to be retried.
        """
        now = utcnow()
        staged: list[Outcome | None] = []
        claims: list[tuple[int, str, str]] = []
        for i, item in enumerate(batch):
            outcome = self._validate(item, now)
            staged.append(outcome)
            if isinstance(outcome, Accepted):
                claim_key = f"{item.source.kind}:{outcome.record.event_id}"
                claims.append((i, claim_key, item.source.owner))
        granted = await self.dedup.claim_many([(k, o) for _, k, o in claims])
        for (i, key, _), ok in zip(claims, granted, strict=True):
            if not ok:
                staged[i] = self._reject(
                    batch[i],
                    DlqReason.DUPLICATE,
                    f"{key.split(':', 1)[1]} was already accepted within the dedup window",
                    now,
                )
        return [o for o in staged if o is not None]

    def _validate(self, item: Incoming, now: datetime) -> Outcome:
        raw = item.value if item.value is not None else b""
        if len(raw) > self.max_record_bytes:
            return self._reject(
                item,
                DlqReason.TOO_LARGE,
                f"{len(raw)} bytes is over the limit of {self.max_record_bytes}",
                now,
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return self._reject(item, DlqReason.UNPARSEABLE, f"not UTF-8: {exc.reason}", now)
        try:
            # Python's parser accepts NaN/Infinity; they are caught as constraint
            # violations below instead of failing the whole record as garbage.
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            return self._reject(
                item, DlqReason.UNPARSEABLE, f"not JSON: {exc.msg} at char {exc.pos}", now
            )
        if not isinstance(doc, dict):
            return self._reject(
                item,
                DlqReason.UNPARSEABLE,
                f"expected a JSON object, got {type(doc).__name__}",
                now,
            )
        if item.source.kind == "event":
            return self._event(item, doc, now)
        return self._label(item, doc, now)

    def _event(self, item: Incoming, doc: dict[str, object], now: datetime) -> Outcome:
        try:
            raw = RawEvent.model_validate(doc)
        except ValidationError as exc:
            return self._reject(item, DlqReason.SCHEMA, _describe(exc), now)
        try:
            spec = self.catalog.resolve(raw.featureset)
            features = spec.validate_features(raw.features)
        except RecordRejected as exc:
            return self._reject(item, exc.reason, exc.detail, now)
        record = ValidEvent(
            event_id=raw.event_id,
            entity_id=raw.entity_id,
            event_time=raw.timestamp,
            featureset=spec.name,
            featureset_version=spec.version,
            features=features,
            ingested_at=now,
        )
        return Accepted(record, raw.entity_id)

    def _label(self, item: Incoming, doc: dict[str, object], now: datetime) -> Outcome:
        try:
            raw = RawLabel.model_validate(doc)
        except ValidationError as exc:
            return self._reject(item, DlqReason.SCHEMA, _describe(exc), now)
        if isinstance(raw.label, float) and not math.isfinite(raw.label):
            return self._reject(
                item, DlqReason.CONSTRAINT, f"label {raw.label!r} is not a finite number", now
            )
        record = ValidLabel(
            event_id=raw.event_id,
            entity_id=raw.entity_id,
            event_time=raw.timestamp,
            label=raw.label,
            ingested_at=now,
        )
        return Accepted(record, raw.entity_id)

    @staticmethod
    def _reject(item: Incoming, reason: DlqReason, detail: str, now: datetime) -> Rejected:
        src = item.source
        key = item.key.decode("utf-8", "replace") if item.key is not None else None
        letter = DeadLetter(
            original_b64=DeadLetter.encode_original(item.value or b""),
            original_key=key,
            reason=reason,
            detail=detail,
            source=src.via,
            source_topic=src.topic,
            source_partition=src.partition,
            source_offset=src.offset,
            kind=src.kind,
            received_at=now,
        )
        return Rejected(letter, key)
