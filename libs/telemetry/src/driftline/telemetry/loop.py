"""Span attributes that tie the retraining loop's spans together, and find them in a backend.

The loop is one trace, started by a drift detection (linked to the traces of
the records behind it); each hop continues the previous one through the
``traceparent`` of a Kafka record or of a gRPC call:

.. code-block:: text

    monitoring  driftline.drift publish            driftline.drift.id
    monitoring  └ driftline.retrain publish        driftline.retrain.id (links: other drifts)
    training      └ driftline.retrain process      one per attempt (waiting for labels too)
    training        └ candidate <model>            driftline.model.version once registered
    registry          ├ Registry/RegisterVersion   └ driftline.models publish (registered)
    serving           │                              └ driftline.models process (prefetch)
    training          └ promote <model>
    registry            └ Registry/SetAlias        └ driftline.models publish (alias_set)
    serving                                          └ driftline.models process (the swap)
    serving                                            └ first prediction <model> v<N>
                                                         (links: that Predict's own span)

The request's and training's spans carry :data:`RETRAIN_ID` (the registry's and
serving's the same id as :data:`TRIGGER_ID`) and :data:`MODEL_NAME`, so a trace
backend finds the loop of a retrain request by tag (Jaeger:
``/api/traces?service=training&tags={"driftline.retrain.id":"<id>"}``).
"""

from __future__ import annotations

from typing import Protocol

from opentelemetry.util.types import AttributeValue

__all__ = [
    "DRIFT_ID",
    "MODEL_ALIAS",
    "MODEL_NAME",
    "MODEL_VERSION",
    "RETRAIN_ID",
    "TRIGGER_ID",
    "ModelEvent",
    "model_event_attributes",
]

DRIFT_ID = "driftline.drift.id"
"""The drift detection a span is for (``DriftEvent.drift_id``)."""
RETRAIN_ID = "driftline.retrain.id"
"""The retrain request a span serves (``RetrainRequest.request_id``)."""
TRIGGER_ID = "driftline.trigger.id"
"""What caused a version or an alias change (a registry event's trigger): a retrain
request's id (as :data:`RETRAIN_ID`), a scheduled snapshot's ``schedule:…`` id, or none."""
MODEL_NAME = "driftline.model.name"
"""The model a span is about."""
MODEL_VERSION = "driftline.model.version"
"""The model version a span registered, promoted, swapped in or answered with."""
MODEL_ALIAS = "driftline.model.alias"
"""The alias a span moved (``champion`` …)."""


class _Lineage(Protocol):
    @property
    def trigger_id(self) -> str | None: ...


class ModelEvent(Protocol):
    """What a registry event (``driftline.contracts.messages.RegistryEvent``) tells a span."""

    @property
    def model_name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def alias(self) -> str | None: ...
    @property
    def trigger(self) -> str | None: ...
    @property
    def lineage(self) -> _Lineage | None: ...


def model_event_attributes(event: ModelEvent) -> dict[str, AttributeValue]:
    """The loop attributes of a span writing or applying a registry event: which model,
    version and alias moved, and the trigger (an alias change's, else the version's)."""
    out: dict[str, AttributeValue] = {
        MODEL_NAME: event.model_name,
        MODEL_VERSION: event.version,
        "driftline.registry.event": str(event.kind),
    }
    if event.alias:
        out[MODEL_ALIAS] = event.alias
    trigger = event.trigger or (event.lineage.trigger_id if event.lineage else None)
    if trigger:
        out[TRIGGER_ID] = trigger
    return out
