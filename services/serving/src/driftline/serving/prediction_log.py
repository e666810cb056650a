"""The prediction log: a bounded buffer between answered RPCs and ``driftline.predictions``.

RPC handlers call :meth:`PredictionLog.offer`, which never blocks and never
grows the buffer past its capacity: when Kafka is slow and the buffer is full,
the new prediction is dropped and counted (``dropped``), and the drop is visible
on ``/metrics``. A writer task drains it in batches, scores the shadow model
there (off the response path) and encodes each entry as the JSON of a
:class:`PredictionRecord` (:func:`encode_prediction`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.context import Context

from driftline.contracts.messages import PredictionRecord
from driftline.serving.loaded_model import LoadedModel

__all__ = [
    "EncodedPrediction",
    "PendingPrediction",
    "PredictionLog",
    "encode_prediction",
    "records_of",
    "timestamp_text",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingPrediction:
    """An answered prediction waiting to be logged (plain values; no pydantic on the RPC path)."""

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


def _scalar(value: Any) -> Any:
    """A numpy (or other ``.item()``-bearing) scalar as the Python scalar JSON can hold."""
    item = getattr(value, "item", None)
    if item is None:
        raise TypeError(f"a {type(value).__name__} cannot go into a prediction record")
    return item()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


_stdlib_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_scalar
).encode


def _stdlib_json(doc: dict[str, Any]) -> bytes:
    try:
        return _stdlib_dumps(doc).encode("utf-8")
    except ValueError:
        # NaN / infinity (an OIP client may send them): JSON has no such numbers;
        # the contract writes them as null, as orjson and pydantic do.
        return _stdlib_dumps({k: _finite(v) for k, v in doc.items()}).encode("utf-8")


try:
    # ~13x faster than the standard library on a prediction record, which is
    # encoded once per prediction. Optional so that an environment without it
    # still logs (through the standard library).
    import orjson

    def _json(doc: dict[str, Any]) -> bytes:
        return orjson.dumps(doc, default=_scalar, option=orjson.OPT_SERIALIZE_NUMPY)

except ImportError:  # pragma: no cover - depends on the environment
    _json = _stdlib_json


def timestamp_text(epoch_s: float) -> str:
    """RFC 3339 UTC with microseconds and ``Z``, as the contract's timestamps serialise."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class EncodedPrediction:
    """One ``driftline.predictions`` record ready for the producer."""

    key: bytes
    """The entity id (UTF-8): the topic's key."""
    value: bytes
    """The :class:`PredictionRecord` as JSON."""
    shadow: bool


def encode_prediction(
    p: PendingPrediction, served_at: str | None = None
) -> list[EncodedPrediction]:
    """The answered prediction's record, then, if a shadow model is set, its shadow record.

    The JSON is built directly (no pydantic on this path: it runs once per
    prediction); :func:`records_of` reads it back through :class:`PredictionRecord`,
    which is how the tests hold it to the contract. ``served_at`` is the
    already-formatted timestamp when the caller shares one between rows.

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


def records_of(p: PendingPrediction) -> list[PredictionRecord]:
    """:func:`encode_prediction`'s records, read back as :class:`PredictionRecord` values."""
    return [PredictionRecord.model_validate_json(e.value) for e in encode_prediction(p)]


class PredictionLog:
    """A bounded FIFO of :class:`PendingPrediction`; drops (and counts) new ones when full."""

    def __init__(self, capacity: int, *, on_drop: Callable[[str, int], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("the prediction log needs room for at least one prediction")
        self.capacity = capacity
        self._items: deque[PendingPrediction] = deque()
        self._wakeup = asyncio.Event()
        self._on_drop = on_drop
        self.dropped = 0
        """Predictions refused because the buffer was full (since start)."""
        self.accepted = 0
        """Predictions accepted into the buffer (since start)."""

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: PendingPrediction) -> bool:
        """Queue ``item`` unless the buffer is full; never blocks. False when dropped."""
        if len(self._items) >= self.capacity:
            self.drop("buffer_full", 1)
            return False
        self._items.append(item)
        self.accepted += 1
        self._wakeup.set()
        return True

    def drop(self, reason: str, count: int) -> None:
        """Count ``count`` predictions lost for ``reason`` (buffer full, Kafka error)."""
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(reason, count)

    async def take(
        self, max_items: int, timeout_s: float | None = None, *, linger_s: float = 0.0
    ) -> list[PendingPrediction]:
        """Up to ``max_items`` oldest entries; waits for one (or ``timeout_s``) when empty.

        With ``linger_s``, once one entry is there, waits that long for more (unless
        ``max_items`` are already there), so that a trickle of predictions still
        reaches Kafka in batches rather than one produce request each.
        """
        if not self._items:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout_s)
            except TimeoutError:
                return []
        if linger_s > 0 and len(self._items) < max_items:
            await asyncio.sleep(linger_s)
        n = min(max_items, len(self._items))
        popleft = self._items.popleft
        return [popleft() for _ in range(n)]
