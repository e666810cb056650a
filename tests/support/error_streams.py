"""An error stream fed through the monitor core as predictions and their labels (no sockets).

Each outcome is one prediction of model ``loans`` v1 and its label, one second
apart from ``T0``: a wrong prediction is labelled 0 where the model said 1.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from driftline.contracts.messages import PredictionRecord, RetrainRequest, ValidLabel
from driftline.monitoring.core import MonitorCore, Outputs

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def feed_error_stream(core: MonitorCore, clock: Clock, errors: bytes) -> list[tuple[int, Outputs]]:
    """Each outcome as a prediction (one a second) and its label; returns non-empty outputs."""
    seen = []
    for i, wrong in enumerate(errors):
        clock.now = T0 + timedelta(seconds=i)
        pred = PredictionRecord(
            request_id=f"r{i}",
            event_id=f"e{i}",
            entity_id="c-1",
            model_name="loans",
            model_version=1,
            features={},
            prediction=1,
            latency_ms=1.0,
            served_at=clock.now,
        )
        label = ValidLabel(
            event_id=f"e{i}",
            entity_id="c-1",
            event_time=clock.now,
            label=0 if wrong else 1,
            ingested_at=clock.now,
        )
        out = core.on_prediction(pred)
        out.extend(core.on_label(label))
        if out.drift or out.retrain:
            seen.append((i, out))
    return seen


def requests_of(seen: list[tuple[int, Outputs]]) -> list[tuple[int, RetrainRequest]]:
    return [(i, r) for i, out in seen for r in out.retrain]
