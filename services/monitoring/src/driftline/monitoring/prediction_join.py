"""Join predictions with their labels by event id, in bounded memory.

Labels usually arrive after the prediction, but Kafka gives no order across
topics, so whichever side arrives first waits for the other.  Both sides are kept
in insertion-ordered maps capped at ``capacity`` entries; the oldest entries are
evicted (and counted) first.  A second label for an event already joined is
ignored (at-least-once delivery replays records).

>>> join = PredictionLabelJoin(capacity=10)
>>> join.add_prediction("e1", "yes", "p") is None
True
>>> join.add_label("e1", "no")
('yes', 'no', 'p')
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from driftline.contracts.messages import LabelValue

__all__ = ["PredictionLabelJoin"]

T = TypeVar("T")


class PredictionLabelJoin(Generic[T]):
    """Pairs ``(prediction, label, context)`` by event id; ``context`` is carried through.

    Not training's ``LabelJoin`` (feature vectors with labels under an event-time
    watermark): this one only pairs what serving answered with what came true."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._predictions: OrderedDict[str, tuple[LabelValue | None, T]] = OrderedDict()
        self._labels: OrderedDict[str, LabelValue] = OrderedDict()
        self._joined: OrderedDict[str, None] = OrderedDict()
        self.evicted = 0
        self.duplicates = 0
        self.joined = 0

    def _remember(self, event_id: str) -> None:
        self._joined[event_id] = None
        if len(self._joined) > self.capacity:
            self._joined.popitem(last=False)

    def add_prediction(
        self, event_id: str, prediction: LabelValue | None, context: T
    ) -> tuple[LabelValue | None, LabelValue, T] | None:
        """Record a prediction; returns the joined triple if its label was already here."""
        if event_id in self._joined or event_id in self._predictions:
            self.duplicates += 1
            return None
        label = self._labels.pop(event_id, None)
        if label is not None:
            self._remember(event_id)
            self.joined += 1
            return prediction, label, context
        self._predictions[event_id] = (prediction, context)
        if len(self._predictions) > self.capacity:
            self._predictions.popitem(last=False)
            self.evicted += 1
        return None

    def add_label(
        self, event_id: str, label: LabelValue
    ) -> tuple[LabelValue | None, LabelValue, T] | None:
        """Record a label; returns the joined triple if its prediction was already here."""
        if event_id in self._joined:
            self.duplicates += 1
            return None
        pending = self._predictions.pop(event_id, None)
        if pending is not None:
            self._remember(event_id)
            self.joined += 1
            return pending[0], label, pending[1]
        self._labels[event_id] = label
        if len(self._labels) > self.capacity:
            self._labels.popitem(last=False)
            self.evicted += 1
        return None

    @property
    def pending(self) -> int:
        """Predictions and labels waiting for their other half."""
        return len(self._predictions) + len(self._labels)
