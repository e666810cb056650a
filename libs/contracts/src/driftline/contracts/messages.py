"""The value model of every topic (UTF-8 JSON on the wire).

Raw models (:class:`RawEvent`, :class:`RawLabel`) describe what producers may
send and are lenient where the contract allows it (timestamp as RFC 3339 or epoch
milliseconds, optional feature set).  Every other model is written by Driftline
itself and is strict.

>>> e = RawEvent.model_validate_json(
...     '{"event_id": "e-1", "entity_id": "c-42", "timestamp": 1795017600123,'
...     ' "features": {"salary": 72000.0, "car": "sedan"}}')
>>> e.timestamp.isoformat()
'2026-11-18T16:00:00.123000+00:00'
"""

from __future__ import annotations

import base64
import hashlib
import math
from datetime import UTC, datetime
from enum import StrEnum
from itertools import repeat
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    TypeAdapter,
    model_validator,
)

__all__ = [
    "DeadLetter",
    "DlqReason",
    "DriftEvent",
    "DriftKind",
    "FeatureValue",
    "FeatureVector",
    "LabelValue",
    "Lineage",
    "OffsetRange",
    "PredictionBatch",
    "PredictionRecord",
    "RawEvent",
    "RawLabel",
    "RegistryEvent",
    "RegistryEventKind",
    "RetrainRequest",
    "Timestamp",
    "ValidEvent",
    "ValidLabel",
    "Variant",
    "prediction_records",
    "utcnow",
]


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def _coerce_time(value: Any) -> Any:
    # Epoch milliseconds are allowed by the contract; bools are ints in Python
    # and must not sneak through as 1 ms after the epoch.
    if isinstance(value, bool):
        raise ValueError("timestamp must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("timestamp must be finite")
        try:
            return datetime.fromtimestamp(value / 1000.0, tz=UTC)
        except (OverflowError, OSError):
            # Only a ValueError becomes a validation error; these would escape the
            # validator and crash the caller on one record (1e20, a 400-digit int).
            raise ValueError("timestamp is out of range (epoch milliseconds)") from None
    return value


def _require_tz(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a timezone (e.g. a trailing 'Z')")
    return value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


Timestamp = Annotated[
    datetime,
    BeforeValidator(_coerce_time),
    AfterValidator(_require_tz),
    PlainSerializer(_iso, return_type=str, when_used="json"),
]
"""A timezone-aware UTC instant; accepts RFC 3339 or epoch ms; serialises as RFC 3339."""

FeatureValue = float | int | str | bool | None
"""One raw or computed feature value."""

LabelValue = int | float | str | bool
"""Ground truth: a class (int / str / bool) or a regression target (float)."""

_Id = Annotated[str, Field(min_length=1, max_length=256)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RawEvent(_Strict):
    """An event as a producer sends it to ``driftline.events`` or ``POST /v1/events``."""

    event_id: _Id
    entity_id: _Id
    timestamp: Timestamp
    featureset: str | None = None
    features: dict[str, FeatureValue]


class RawLabel(_Strict):
    """A label (ground truth) as sent to ``driftline.labels`` or ``POST /v1/labels``.

    It is checked against the label type its feature set declares (``featureset``
    may be omitted when only one is registered, as for events).
    """

    event_id: _Id
    entity_id: _Id
    timestamp: Timestamp
    featureset: str | None = None
    label: LabelValue


class ValidEvent(_Strict):
    """An event that passed its feature set's schema and constraints."""

    event_id: str
    entity_id: str
    event_time: Timestamp
    featureset: str
    featureset_version: int
    features: dict[str, FeatureValue]
    ingested_at: Timestamp


class ValidLabel(_Strict):
    """A label that passed validation (against its feature set's label type, if declared)."""

    event_id: str
    entity_id: str
    event_time: Timestamp
    label: LabelValue
    ingested_at: Timestamp
    featureset: str | None = None
    """The feature set it was checked against (absent on labels written before it was kept)."""


class DlqReason(StrEnum):
    """Why a record was dead-lettered."""

    UNPARSEABLE = "unparseable"
    """Not UTF-8, or not a JSON object."""
    SCHEMA = "schema"
    """Missing fields, wrong types, unknown fields."""
    CONSTRAINT = "constraint"
    """A value outside its declared range or allowed set, or not finite."""
    UNKNOWN_FEATURESET = "unknown_featureset"
    """The feature set named (or implied) is not registered."""
    DUPLICATE = "duplicate"
    """An event id already seen inside the dedup window."""
    TOO_LARGE = "too_large"
    """Larger than the configured maximum record size."""
    PROCESSING_ERROR = "processing_error"
    """Valid on its face, but processing it raised an error (the detail names it)."""


DETAIL_CHARS = 2000
"""Longest :attr:`DeadLetter.detail` kept; a longer one is cut and says so."""


class DeadLetter(_Strict):
    """A record that could not be accepted, kept with the reason.

    The original bytes are kept whole up to the per-record limit; of a larger
    record only its first bytes are kept (``truncated``), with its size and
    sha256, and the whole record stays readable at its source offset for the
    topic's retention (``driftline dlq show`` and ``replay`` fetch it from there).
    So a dead letter always fits on the dead-letter topic.
    """

    original_b64: str
    """The record's value as received, base64 (its first bytes only when ``truncated``)."""
    original_size: int | None = None
    """Size in bytes of the whole original value."""
    original_sha256: str | None = None
    """Hex sha256 of the whole original value."""
    truncated: bool = False
    """True when ``original_b64`` holds only the first bytes of the original."""
    original_key: str | None = None
    """The record's Kafka key (UTF-8, replaced where invalid), if any."""
    reason: DlqReason
    detail: str
    """What is wrong, for a person: field, value, rule."""
    source: Literal["kafka", "http"]
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    kind: Literal["event", "label"]
    received_at: Timestamp

    def original(self) -> bytes:
        """The original bytes kept in the letter (only the first ones when ``truncated``)."""
        return base64.b64decode(self.original_b64)

    @staticmethod
    def encode_original(raw: bytes) -> str:
        """Base64 text of raw bytes, for :attr:`original_b64`."""
        return base64.b64encode(raw).decode("ascii")

    @classmethod
    def of(
        cls,
        raw: bytes,
        *,
        keep_bytes: int,
        reason: DlqReason,
        detail: str,
        **where: Any,
    ) -> DeadLetter:
        """The dead letter of ``raw``: at most ``keep_bytes`` of it kept, size and digest noted.

        ``where`` holds the remaining fields (``source``, ``kind``, ``source_topic`` …;
        ``received_at`` defaults to now).

        >>> d = DeadLetter.of(b"x" * 10, keep_bytes=4, reason=DlqReason.TOO_LARGE,
        ...                   detail="too big", source="http", kind="event")
        >>> d.original(), d.original_size, d.truncated
        (b'xxxx', 10, True)
        """
        kept = raw[:keep_bytes]
        if len(detail) > DETAIL_CHARS:
            detail = detail[: DETAIL_CHARS - 20] + f"… ({len(detail)} chars)"
        where.setdefault("received_at", utcnow())
        return cls(
            original_b64=cls.encode_original(kept),
            original_size=len(raw),
            original_sha256=hashlib.sha256(raw).hexdigest(),
            truncated=len(kept) < len(raw),
            reason=reason,
            detail=detail,
            **where,
        )


class FeatureVector(_Strict):
    """The feature values of an entity as of one event: the point-in-time log."""

    event_id: str
    entity_id: str
    event_time: Timestamp
    featureset: str
    featureset_version: int
    values: dict[str, FeatureValue]
    """Raw values of the event and the entity's aggregates including that event."""
    produced_at: Timestamp


Variant = Literal["champion", "challenger", "shadow", "pinned"]
"""Which alias answered a prediction (``pinned``: a version or another alias asked for)."""


class PredictionRecord(_Strict):
    """One answered (or shadow) prediction."""

    request_id: str
    event_id: str | None = None
    entity_id: str
    model_name: str
    model_version: int
    variant: Variant = "champion"
    shadow: bool = False
    features: dict[str, FeatureValue]
    prediction: LabelValue | None
    probabilities: dict[str, float] = Field(default_factory=dict)
    latency_ms: float
    served_at: Timestamp


class PredictionBatch(_Strict):
    """The rows one request had answered by one model version, column by column.

    Serving writes one to ``driftline.predictions`` for each ModelInfer request, and for
    each model version (and variant) answering a PredictBatch of more than one row; a
    single Predict is still one :class:`PredictionRecord`.  Row ``i`` is element ``i``
    of every column; every column has as many elements as :attr:`predictions` (a
    batch of columns that disagree is refused, naming the column).  :meth:`records`
    expands it into the per-row records; :func:`prediction_records` reads either shape.

    ``null`` in a feature column is a row without that value (a missing feature, or a
    NaN JSON cannot hold): its record leaves the feature out, as a per-row record
    leaves out missing features.  ``null`` in a probability column is a class the
    model did not name for that row (an online model before it saw the class).

    >>> b = PredictionBatch.model_validate_json(
    ...     '{"request_id": "r-7", "model_name": "loans", "model_version": 3,'
    ...     ' "features": {"salary": [72000.0, null]}, "predictions": [1, 0],'
    ...     ' "probabilities": {"0": [0.2, 0.9], "1": [0.8, 0.1]},'
    ...     ' "latency_ms": 1.5, "served_at": "2026-11-23T16:00:00.123Z"}')
    >>> [(r.request_id, r.features, r.prediction) for r in b.records()]
    [('r-7/0', {'salary': 72000.0}, 1), ('r-7/1', {}, 0)]
    """

    request_id: str
    """The request's id: the ModelInfer request id, or a PredictBatch's first row's."""
    request_ids: list[str] | None = None
    """Each row's request id; absent: row ``i`` is ``f"{request_id}/{i}"`` (ModelInfer)."""
    event_ids: list[str | None] | None = None
    """Each row's event id (PredictBatch); absent: no row names one."""
    entity_ids: list[str] | None = None
    """Each row's entity id; absent: no row names one (``""``, a ModelInfer without
    an ``entity_id`` input)."""
    model_name: str
    model_version: int
    variant: Variant = "champion"
    shadow: bool = False
    features: dict[str, list[FeatureValue]]
    """Feature name -> one value per row."""
    predictions: list[LabelValue | None] = Field(min_length=1)
    """One prediction per row: only a batch has this field (a record has ``prediction``)."""
    probabilities: dict[str, list[float | None]] = Field(default_factory=dict)
    """Class -> each row's probability of it (empty for regression)."""
    latency_ms: float
    """The whole request's latency (for a shadow batch: the shadow model's scoring time)."""
    served_at: Timestamp

    @model_validator(mode="after")
    def _columns_have_one_value_per_row(self) -> PredictionBatch:
        n = len(self.predictions)
        columns: list[tuple[str, list[Any] | None]] = [
            ("request_ids", self.request_ids),
            ("event_ids", self.event_ids),
            ("entity_ids", self.entity_ids),
            *((f"features[{k!r}]", v) for k, v in self.features.items()),
            *((f"probabilities[{k!r}]", v) for k, v in self.probabilities.items()),
        ]
        for name, values in columns:
            if values is not None and len(values) != n:
                raise ValueError(
                    f"column {name} has {len(values)} values for {n} predictions; "
                    "every column has one value per row"
                )
        return self

    def __len__(self) -> int:
        return len(self.predictions)

    def records(self) -> list[PredictionRecord]:
        """The per-row :class:`PredictionRecord` values, in row order.

        Each equals the record serving writes for the same row of a single Predict.
        """
        n = len(self.predictions)
        ids = self.request_ids or [f"{self.request_id}/{i}" for i in range(n)]
        events: list[str | None] = self.event_ids or [None] * n
        entities = self.entity_ids or [""] * n
        names = list(self.features)
        # zip() of no columns would stop at once: every row has no features then.
        feature_rows = zip(*self.features.values(), strict=True) if names else repeat(())
        classes = list(self.probabilities)
        proba_rows = zip(*self.probabilities.values(), strict=True) if classes else repeat(())
        model_name, model_version = self.model_name, self.model_version
        variant, shadow = self.variant, self.shadow
        latency_ms, served_at = self.latency_ms, self.served_at
        rows = [
            {
                "request_id": request_id,
                "event_id": event_id,
                "entity_id": entity_id,
                "model_name": model_name,
                "model_version": model_version,
                "variant": variant,
                "shadow": shadow,
                "features": {k: v for k, v in zip(names, values, strict=True) if v is not None},
                "prediction": prediction,
                "probabilities": {
                    c: p for c, p in zip(classes, probs, strict=True) if p is not None
                },
                "latency_ms": latency_ms,
                "served_at": served_at,
            }
            # Lengths were checked at validation; the repeat()s are endless.
            for request_id, event_id, entity_id, values, prediction, probs in zip(
                ids, events, entities, feature_rows, self.predictions, proba_rows, strict=False
            )
        ]
        # One validation of them all in pydantic-core: faster than model_construct per row.
        return _RECORDS.validate_python(rows)


_RECORDS: TypeAdapter[list[PredictionRecord]] = TypeAdapter(list[PredictionRecord])


def _shape_of(value: Any) -> str:
    # Told apart by a field only a batch has, so that a record's error is a record's.
    if isinstance(value, dict):
        return "batch" if "predictions" in value else "record"
    return "batch" if isinstance(value, PredictionBatch) else "record"


_PREDICTIONS_VALUE: TypeAdapter[PredictionRecord | PredictionBatch] = TypeAdapter(
    Annotated[
        Annotated[PredictionRecord, Tag("record")] | Annotated[PredictionBatch, Tag("batch")],
        Discriminator(_shape_of),
    ],
    # What an unreadable record's skip says it is not; the error's location starts
    # with the shape it was read as (``batch.model_name: Field required``).
    config=ConfigDict(title="PredictionRecord or PredictionBatch"),
)


def prediction_records(value: bytes | str) -> list[PredictionRecord]:
    """The prediction records of one ``driftline.predictions`` value, whichever its shape.

    A :class:`PredictionRecord` gives itself; a :class:`PredictionBatch` (told by its
    ``predictions`` field) its :meth:`~PredictionBatch.records`.  Anything else raises
    :class:`pydantic.ValidationError`, so readers keep their unreadable-record handling.

    >>> [r.request_id for r in prediction_records(
    ...     '{"request_id": "r", "entity_ids": ["a", "b"], "model_name": "m",'
    ...     ' "model_version": 1, "features": {}, "predictions": [0.5, 0.7],'
    ...     ' "latency_ms": 2.0, "served_at": "2026-11-23T16:00:00Z"}')]
    ['r/0', 'r/1']
    """
    parsed = _PREDICTIONS_VALUE.validate_json(value)
    return parsed.records() if isinstance(parsed, PredictionBatch) else [parsed]


class OffsetRange(_Strict):
    """A contiguous range of offsets of one topic partition (``last`` inclusive)."""

    topic: str
    partition: int
    first: int
    last: int


class Lineage(_Strict):
    """Where a model version came from."""

    featureset: str
    featureset_version: int
    offsets: list[OffsetRange] = Field(default_factory=list)
    event_time_from: Timestamp | None = None
    event_time_to: Timestamp | None = None
    examples: int = 0
    parent_version: int | None = None
    trigger_id: str | None = None
    """The retrain request id (or schedule tick) that produced it."""


class RegistryEventKind(StrEnum):
    """What happened in the registry."""

    REGISTERED = "registered"
    ALIAS_SET = "alias_set"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    RETRAIN_UNSERVED = "retrain_unserved"
    """A retrain request Driftline cannot serve for the model (no trainer for its framework):
    ``trigger`` is the request id, ``reason`` why, ``version`` the latest version then; the
    request's drift ids travel in ``spec["_registry"]["drift_ids"]``.  Kept on the model
    until a newer version is registered.  Readers that do not act on it ignore it."""
    WRITER_CLAIMED = "writer_claimed"
    """A claim of a one-writer role (``trigger`` names the role, ``actor`` the holder): its
    epoch is one more than the role's last claim, and from it on the log every event made
    under an older epoch of the role (``spec["_registry"]["writer"]``) is ignored.  The
    claim names no model (``model_name`` is empty, ``version`` 0)."""


class RegistryEvent(_Strict):
    """One change to the registry; the ``driftline.models`` log is the source of truth."""

    event_id: str
    kind: RegistryEventKind
    model_name: str
    version: int
    alias: str | None = None
    previous_version: int | None = None
    actor: str
    reason: str = ""
    trigger: str | None = None
    at: Timestamp
    sha256: str | None = None
    signature: str | None = None
    size_bytes: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    """The model spec (and training reference statistics) recorded with the version."""


class DriftKind(StrEnum):
    """Which distribution moved."""

    DATA = "data"
    PREDICTION = "prediction"
    CONCEPT = "concept"


class DriftEvent(_Strict):
    """A drift detection."""

    drift_id: str
    model_name: str
    kind: DriftKind
    features: list[str] = Field(default_factory=list)
    detector: str
    statistic: float
    threshold: float
    window: int
    """Number of observations the statistic was computed over."""
    severity: Literal["info", "warning", "critical"]
    detected_at: Timestamp
    onset_event_time: Timestamp | None = None
    onset_offsets: dict[str, int] = Field(default_factory=dict)
    """``"topic:partition" -> offset`` where the drift is estimated to start."""
    trace_ids: list[str] = Field(default_factory=list)


class RetrainRequest(_Strict):
    """Ask training for a new candidate; ``request_id`` is the dedup key."""

    request_id: str
    model_name: str
    reason: str
    drift_ids: list[str] = Field(default_factory=list)
    since_event_time: Timestamp | None = None
    since_offsets: dict[str, int] = Field(default_factory=dict)
    requested_at: Timestamp
