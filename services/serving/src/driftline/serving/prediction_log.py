"""The prediction log: a bounded buffer between answered RPCs and ``driftline.predictions``.

RPC handlers call :meth:`PredictionLog.offer`, which never blocks and never
grows the buffer past its capacity: when Kafka is slow and the buffer is full,
the new prediction is dropped and counted (``dropped``), and the drop is visible
on ``/metrics``. A writer task drains it in batches, scores the shadow model
there (off the response path) and turns each entry into the
:class:`PredictionRecord` values to send.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.context import Context

from driftline.contracts.messages import PredictionRecord
from driftline.serving.loaded_model import LoadedModel

__all__ = ["PendingPrediction", "PredictionLog", "records_of"]

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


def _record(
    p: PendingPrediction,
    model: LoadedModel,
    variant: str,
    prediction: Any,
    probabilities: dict[str, float],
    *,
    shadow: bool,
    latency_ms: float,
) -> PredictionRecord:
    return PredictionRecord(
        request_id=p.request_id,
        event_id=p.event_id,
        entity_id=p.entity_id,
        model_name=model.name,
        model_version=model.version,
        variant=variant,
        shadow=shadow,
        features=p.features,
        prediction=prediction,
        probabilities=probabilities,
        latency_ms=latency_ms,
        served_at=datetime.fromtimestamp(p.served_at, UTC),
    )


def records_of(p: PendingPrediction) -> list[PredictionRecord]:
    """The answered prediction's record, then, if a shadow model is set, its shadow record.

    The shadow record has ``shadow=True`` and ``variant="shadow"``; its latency is
    the time the shadow model took to score. A shadow model that fails on the
    input is logged and yields no record (the answered prediction is unaffected).
    """
    out = [
        _record(
            p,
            p.model,
            p.variant,
            p.prediction,
            p.probabilities,
            shadow=False,
            latency_ms=p.latency_ms,
        )
    ]
    if p.shadow is not None:
        started = time.perf_counter()
        try:
            prediction, probabilities = p.shadow.score(dict(p.features))
        except Exception:
            # The shadow is an experiment: its failure is logged, never propagated.
            log.exception("shadow model %s failed on request %s", p.shadow.describe(), p.request_id)
            return out
        out.append(
            _record(
                p,
                p.shadow,
                "shadow",
                prediction,
                probabilities,
                shadow=True,
                latency_ms=(time.perf_counter() - started) * 1000.0,
            )
        )
    return out


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

    async def take(self, max_items: int, timeout_s: float | None = None) -> list[PendingPrediction]:
        """Up to ``max_items`` oldest entries; waits for one (or ``timeout_s``) when empty."""
        if not self._items:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout_s)
            except TimeoutError:
                return []
        n = min(max_items, len(self._items))
        popleft = self._items.popleft
        return [popleft() for _ in range(n)]
