"""The prediction log: a bounded buffer between answered RPCs and ``driftline.predictions``.

RPC handlers call :meth:`PredictionLog.offer` with one entry per answer: a
:class:`PendingPrediction` for a single Predict, a :class:`PendingBatch` for the
rows of a ModelInfer request (or of one model version answering a PredictBatch).
An entry holds the request's values as the RPC had them (a batch: its feature
columns and the model's :class:`~driftline.model_runtimes.Predictions`), so
answering pays for no per-row logging work.  ``offer`` never blocks and never
lets the buffer grow without bound: its capacity is counted in rows, and when
Kafka is slow and the buffer is full, the new entry is dropped whole and its rows
counted (``dropped``, and ``/metrics``).

A writer task drains it in batches, scores the shadow model there (off the
response path; a batch's rows with one call) and encodes each entry straight to
JSON: a :class:`PredictionRecord` for a single prediction
(:func:`encode_prediction`), a :class:`PredictionBatch` for a batch
(:func:`encode_batch`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, ClassVar

from opentelemetry.context import Context

from driftline.contracts.messages import PredictionRecord, prediction_records
from driftline.model_runtimes import FeatureBatch, Predictions
from driftline.serving.loaded_model import LoadedModel

__all__ = [
    "EncodedPrediction",
    "LogEntry",
    "PendingBatch",
    "PendingPrediction",
    "PredictionLog",
    "encode_batch",
    "encode_entry",
    "encode_prediction",
    "records_of",
    "timestamp_text",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingPrediction:
    """An answered prediction waiting to be logged (plain values; no pydantic on the RPC path)."""

    rows: ClassVar[int] = 1
    request_id: str
    event_id: str | None
    entity_id: str
    model: LoadedModel
    variant: str
    features: dict[str, Any]
    prediction: Any
    probabilities: dict[str, float]
    latency_ms: float
    served_at: float
    """Epoch seconds."""
    shadow: LoadedModel | None = None
    """The shadow model to score the same features with, off the response path."""
    trace: Context | None = None
    """The request's trace context, so the Kafka record carries its traceparent."""


@dataclass(slots=True)
class PendingBatch:
    """The rows of one request answered by one model version, waiting to be logged.

    The values are the RPC's own (no copy, no per-row dict): the feature columns
    the model was given and the :class:`Predictions` it gave.  Do not change them
    after offering.
    """

    request_id: str
    """The request's id (a PredictBatch: its first row's); the record's Kafka key."""
    model: LoadedModel
    variant: str
    features: FeatureBatch
    """The rows' features, a column per feature (None: the row has no value)."""
    predictions: Predictions
    latency_ms: float
    served_at: float
    """Epoch seconds."""
    request_ids: Sequence[str] | None = None
    """Each row's request id; None: ``f"{request_id}/{i}"`` (ModelInfer)."""
    event_ids: Sequence[str | None] | None = None
    entity_ids: Sequence[str] | None = None
    """Each row's entity; None: no row names one."""
    shadow: LoadedModel | None = None
    """The shadow model to score the same rows with (one call), off the response path."""
    trace: Context | None = None
    """The request's trace context, so the Kafka records carry its traceparent."""

    @property
    def rows(self) -> int:
        """How many answered rows the entry holds."""
        return len(self.predictions)


LogEntry = PendingPrediction | PendingBatch
"""What the buffer holds: one answered prediction, or the rows of one request."""


def _default(value: Any) -> Any:
    """A numpy (or other ``.tolist()``/``.item()``-bearing) value as the Python JSON can hold."""
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    item = getattr(value, "item", None)
    if item is None:
        raise TypeError(f"a {type(value).__name__} cannot go into a prediction record")
    return item()


def _finite(value: Any) -> Any:
    """``value`` with every NaN / infinity (in dicts, lists and arrays) made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist") or hasattr(value, "item"):
        return _finite(_default(value))
    return value


_stdlib_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
).encode


def _stdlib_json(doc: dict[str, Any]) -> bytes:
    try:
        return _stdlib_dumps(doc).encode("utf-8")
    except ValueError:
        # NaN / infinity (an OIP client may send them): JSON has no such numbers;
        # the contract writes them as null, as orjson and pydantic do.
        return _stdlib_dumps(_finite(doc)).encode("utf-8")


try:
    # ~13x faster than the standard library on a prediction record, and it writes a
    # batch's numpy columns (probabilities) straight from their buffers. Optional so
    # that an environment without it still logs (through the standard library).
    import orjson

    def _json(doc: dict[str, Any]) -> bytes:
        return orjson.dumps(doc, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)

except ImportError:  # pragma: no cover - depends on the environment
    _json = _stdlib_json


def timestamp_text(epoch_s: float) -> str:
    """RFC 3339 UTC with microseconds and ``Z``, as the contract's timestamps serialise."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class EncodedPrediction:
    """One ``driftline.predictions`` record ready for the producer."""

    key: bytes
    """The topic's key (UTF-8): the entity id of a record, the request id of a batch."""
    value: bytes
    """The :class:`PredictionRecord` or :class:`PredictionBatch` as JSON."""
    shadow: bool
    rows: int = 1
    """The prediction rows it holds."""


def encode_prediction(
    p: PendingPrediction, served_at: str | None = None
) -> list[EncodedPrediction]:
    """The answered prediction's record, then, if a shadow model is set, its shadow record.

    The JSON is built directly (no pydantic on this path: it runs once per
    prediction); :func:`records_of` reads it back through the contract, which is
    how the tests hold it to it. ``served_at`` is the already-formatted timestamp
    when the caller shares one between entries.

    The shadow record has ``shadow=True`` and ``variant="shadow"``; its latency is
    the time the shadow model took to score. A shadow model that fails on the
    input is logged and yields no record (the answered prediction is unaffected).
    Raises :class:`TypeError` or :class:`ValueError` for a value JSON cannot hold
    (the caller counts the prediction as dropped).
    """
    model = p.model
    doc: dict[str, Any] = {
        "request_id": p.request_id,
        "event_id": p.event_id,
        "entity_id": p.entity_id,
        "model_name": model.name,
        "model_version": model.version,
        "variant": p.variant,
        "shadow": False,
        "features": p.features,
        "prediction": p.prediction,
        "probabilities": p.probabilities,
        "latency_ms": p.latency_ms,
        "served_at": served_at or timestamp_text(p.served_at),
    }
    key = p.entity_id.encode("utf-8")
    out = [EncodedPrediction(key, _json(doc), False)]
    shadow = p.shadow
    if shadow is not None:
        started = time.perf_counter()
        try:
            prediction, probabilities = shadow.score(dict(p.features))
        except Exception:
            # The shadow is an experiment: its failure is logged, never propagated.
            log.exception("shadow model %s failed on request %s", shadow.describe(), p.request_id)
            return out
        doc["model_name"] = shadow.name
        doc["model_version"] = shadow.version
        doc["variant"] = "shadow"
        doc["shadow"] = True
        doc["prediction"] = prediction
        doc["probabilities"] = probabilities
        doc["latency_ms"] = (time.perf_counter() - started) * 1000.0
        out.append(EncodedPrediction(key, _json(doc), True))
    return out


_ROW_COLUMNS = ("request_ids", "event_ids", "entity_ids", "predictions")
"""The batch fields holding one value per row (``features`` and ``probabilities``
hold a column per name)."""


def _rows_of(doc: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """The batch document of rows ``start:stop`` of ``doc`` (each row keeps its request id)."""
    part = dict(doc)
    if "request_ids" not in doc:
        part["request_ids"] = [f"{doc['request_id']}/{i}" for i in range(start, stop)]
    for name in _ROW_COLUMNS:
        if name in doc:
            part[name] = doc[name][start:stop]
    part["features"] = {k: v[start:stop] for k, v in doc["features"].items()}
    part["probabilities"] = {k: v[start:stop] for k, v in doc["probabilities"].items()}
    return part


def _encode_rows(
    doc: dict[str, Any], key: bytes, shadow: bool, n: int, max_bytes: int | None
) -> list[EncodedPrediction]:
    """``doc`` as one record, or, when larger than ``max_bytes``, as several of its rows."""
    value = _json(doc)
    if max_bytes is None or len(value) <= max_bytes or n == 1:
        return [EncodedPrediction(key, value, shadow, n)]
    # Kafka refuses a record above the topic's max.message.bytes: split into parts
    # expected to fit (checked again: rows are not all the same size).
    parts = min(n, math.ceil(len(value) / max_bytes) + 1)
    bounds = [n * i // parts for i in range(parts + 1)]
    out: list[EncodedPrediction] = []
    for start, stop in pairwise(bounds):
        out.extend(_encode_rows(_rows_of(doc, start, stop), key, shadow, stop - start, max_bytes))
    return out


def encode_batch(
    p: PendingBatch, served_at: str | None = None, *, max_bytes: int | None = None
) -> list[EncodedPrediction]:
    """The batch's :class:`PredictionBatch` record, then, with a shadow model, its shadow's.

    One record per batch, keyed by the request id (its rows span entities), unless
    it would be larger than ``max_bytes``: then several, each with some of the rows
    and their request ids. The shadow model scores all the rows with one call; its
    batch has ``shadow=True``, ``variant="shadow"`` and the scoring time as latency;
    a shadow model that fails is logged and yields no record. Raises
    :class:`TypeError` or :class:`ValueError` for a value JSON cannot hold.
    """
    model, n = p.model, p.rows
    predictions = p.predictions
    doc: dict[str, Any] = {"request_id": p.request_id}
    if p.request_ids is not None:
        doc["request_ids"] = p.request_ids
    if p.event_ids is not None and any(e is not None for e in p.event_ids):
        doc["event_ids"] = p.event_ids
    if p.entity_ids is not None:
        doc["entity_ids"] = p.entity_ids
    doc.update(
        model_name=model.name,
        model_version=model.version,
        variant=p.variant,
        shadow=False,
        features=dict(p.features.columns),
        predictions=predictions.labels,
        probabilities=predictions.probability_columns(),
        latency_ms=p.latency_ms,
        served_at=served_at or timestamp_text(p.served_at),
    )
    key = p.request_id.encode("utf-8")
    out = _encode_rows(doc, key, False, n, max_bytes)
    shadow = p.shadow
    if shadow is not None:
        started = time.perf_counter()
        try:
            rows = FeatureBatch.from_columns(p.features.columns, n, shadow.feature_names)
            scored = shadow.predict(rows)
        except Exception:
            # The shadow is an experiment: its failure is logged, never propagated.
            log.exception("shadow model %s failed on request %s", shadow.describe(), p.request_id)
            return out
        doc.update(
            model_name=shadow.name,
            model_version=shadow.version,
            variant="shadow",
            shadow=True,
            predictions=scored.labels,
            probabilities=scored.probability_columns(),
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )
        out.extend(_encode_rows(doc, key, True, n, max_bytes))
    return out


def encode_entry(
    p: LogEntry, served_at: str | None = None, *, max_bytes: int | None = None
) -> list[EncodedPrediction]:
    """:func:`encode_prediction` or :func:`encode_batch`, whichever ``p`` is."""
    if isinstance(p, PendingBatch):
        return encode_batch(p, served_at, max_bytes=max_bytes)
    return encode_prediction(p, served_at)


def records_of(p: LogEntry) -> list[PredictionRecord]:
    """The per-row records of ``p`` 's encoded values, read back through the contract."""
    return [r for e in encode_entry(p) for r in prediction_records(e.value)]


class PredictionLog:
    """A bounded FIFO of :data:`LogEntry`; drops (and counts) new ones when full.

    ``capacity`` counts rows: an entry is taken whole while fewer than ``capacity``
    rows wait (so the buffer holds at most ``capacity`` rows plus one request's),
    and dropped whole, its rows counted, otherwise.
    """

    def __init__(self, capacity: int, *, on_drop: Callable[[str, int], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("the prediction log needs room for at least one prediction")
        self.capacity = capacity
        self._items: deque[LogEntry] = deque()
        self._rows = 0
        self._wakeup = asyncio.Event()
        self._on_drop = on_drop
        self.dropped = 0
        """Rows refused or lost (buffer full, Kafka error …), since start."""
        self.accepted = 0
        """Rows accepted into the buffer, since start."""

    def __len__(self) -> int:
        """Rows waiting."""
        return self._rows

    @property
    def entries(self) -> int:
        """Entries waiting (a batch is one)."""
        return len(self._items)

    def offer(self, item: LogEntry) -> bool:
        """Queue ``item`` unless the buffer is full; never blocks. False when dropped."""
        rows = item.rows
        if self._rows >= self.capacity:
            self.drop("buffer_full", rows)
            return False
        self._items.append(item)
        self._rows += rows
        self.accepted += rows
        self._wakeup.set()
        return True

    def drop(self, reason: str, count: int) -> None:
        """Count ``count`` rows lost for ``reason`` (buffer full, Kafka error …)."""
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(reason, count)

    async def take(
        self, max_rows: int, timeout_s: float | None = None, *, linger_s: float = 0.0
    ) -> list[LogEntry]:
        """The oldest entries, up to ``max_rows`` rows (at least one entry, whatever its
        rows); waits for one (or ``timeout_s``) when empty.

        With ``linger_s``, once one entry is there, waits that long for more (unless
        ``max_rows`` rows are already there), so that a trickle of predictions still
        reaches Kafka in batches rather than one produce request each.
        """
        if not self._items:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout_s)
            except TimeoutError:
                return []
        if linger_s > 0 and self._rows < max_rows:
            await asyncio.sleep(linger_s)
        items = self._items
        out: list[LogEntry] = []
        taken = 0
        while items and (not out or taken + items[0].rows <= max_rows):
            item = items.popleft()
            taken += item.rows
            out.append(item)
        self._rows -= taken
        return out
