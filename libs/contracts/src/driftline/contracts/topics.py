"""Every Kafka topic of the platform, declared once.

Services import the :class:`Topic` objects from here; no topic name is written
anywhere else.  :data:`ALL_TOPICS` is what provisioning creates.

>>> EVENTS_VALID.name, EVENTS_VALID.value_model.__name__
('driftline.events.valid', 'ValidEvent')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from driftline.contracts.messages import (
    DeadLetter,
    DriftEvent,
    FeatureVector,
    PredictionBatch,
    PredictionRecord,
    RawEvent,
    RawLabel,
    RegistryEvent,
    RetrainRequest,
    ValidEvent,
    ValidLabel,
)

__all__ = [
    "ALL_TOPICS",
    "DLQ",
    "DRIFT",
    "EVENTS",
    "EVENTS_VALID",
    "FEATURES",
    "LABELS",
    "LABELS_VALID",
    "MODELS",
    "PREDICTIONS",
    "RETRAIN",
    "Topic",
    "topic_by_name",
]

DAY_MS = 24 * 3600 * 1000
INFINITE = -1


@dataclass(frozen=True)
class Topic:
    """A topic's contract: name, partitions, what the key is, the value model, retention.

    A topic carries values of :attr:`value_model`, and of :attr:`other_value_models`
    when it has more than one shape (``driftline.predictions``: one record or a batch);
    :attr:`value_models` lists them all.
    """

    name: str
    partitions: int
    key: str
    value_model: type[BaseModel]
    retention_ms: int = 7 * DAY_MS
    notes: str = ""
    config: dict[str, str] = field(default_factory=dict)
    other_value_models: tuple[type[BaseModel], ...] = ()

    @property
    def value_models(self) -> tuple[type[BaseModel], ...]:
        """Every model a value of this topic may be (:attr:`value_model` first)."""
        return (self.value_model, *self.other_value_models)

    def topic_config(self, max_message_bytes: int | None = None) -> dict[str, str]:
        """Broker-side topic configuration used at creation.

        ``max_message_bytes`` (the settings' ``kafka.max_message_bytes``) sets the
        topic's ``max.message.bytes``, so the largest record a producer may send and
        the largest a topic takes are one figure.
        """
        extra = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else {}
        return {"retention.ms": str(self.retention_ms), **extra, **self.config}


EVENTS = Topic(
    "driftline.events",
    6,
    "entity id (optional)",
    RawEvent,
    notes="written by producers; anything can arrive here",
)
LABELS = Topic(
    "driftline.labels",
    6,
    "entity id (optional)",
    RawLabel,
    notes="ground truth, usually delayed",
)
EVENTS_VALID = Topic("driftline.events.valid", 6, "entity id", ValidEvent)
LABELS_VALID = Topic("driftline.labels.valid", 6, "entity id", ValidLabel)
DLQ = Topic(
    "driftline.dlq",
    3,
    "original key",
    DeadLetter,
    retention_ms=30 * DAY_MS,
    notes="nothing is dropped silently",
)
FEATURES = Topic(
    "driftline.features",
    6,
    "entity id",
    FeatureVector,
    retention_ms=30 * DAY_MS,
    notes="the offline log; training reads it, so serving and training see the same features",
)
PREDICTIONS = Topic(
    "driftline.predictions",
    6,
    "entity id; request id for a batch",
    PredictionRecord,
    other_value_models=(PredictionBatch,),
    notes="a Predict is one PredictionRecord keyed by its entity; a ModelInfer request (and "
    "each model version answering a PredictBatch) is one PredictionBatch keyed by its "
    "request id, since its rows span entities; read either with prediction_records()",
)
MODELS = Topic(
    "driftline.models",
    1,
    "model name",
    RegistryEvent,
    retention_ms=INFINITE,
    notes="infinite retention: the audit trail; one partition keeps one global order",
)
DRIFT = Topic("driftline.drift", 1, "model name", DriftEvent, retention_ms=30 * DAY_MS)
RETRAIN = Topic("driftline.retrain", 1, "model name", RetrainRequest, retention_ms=30 * DAY_MS)

ALL_TOPICS: tuple[Topic, ...] = (
    EVENTS,
    LABELS,
    EVENTS_VALID,
    LABELS_VALID,
    DLQ,
    FEATURES,
    PREDICTIONS,
    MODELS,
    DRIFT,
    RETRAIN,
)


def topic_by_name(name: str) -> Topic:
    """The declared topic called ``name``; :class:`KeyError` names the known ones."""
    for t in ALL_TOPICS:
        if t.name == name:
            return t
    known = ", ".join(t.name for t in ALL_TOPICS)
    raise KeyError(f"no topic {name!r} is declared; known topics: {known}")
