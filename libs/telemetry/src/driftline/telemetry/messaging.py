"""Span attributes and links for Kafka hops, in OpenTelemetry's messaging conventions.

A service that consumes a traced record opens a ``process`` span whose parent is
the context the record carries (``driftline.kafkaio.context_from_headers``); one
that acts on *many* records (a drift detection, a retraining request) opens a new
trace and links to theirs, as the messaging conventions prescribe for batches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanContext
from opentelemetry.util.types import AttributeValue

__all__ = ["SpanContextMemo", "messaging_attributes", "span_context_of"]

Attributes = dict[str, AttributeValue]


def messaging_attributes(
    topic: str,
    operation: str,
    *,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | str | None = None,
) -> Attributes:
    """``messaging.*`` attributes of a Kafka span (``operation``: process, publish, receive).

    >>> attrs = messaging_attributes("driftline.events.valid", "process", partition=2)
    >>> attrs["messaging.system"], attrs["messaging.destination.partition.id"]
    ('kafka', '2')
    """
    out: Attributes = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }
    if partition is not None:
        out["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        out["messaging.kafka.offset"] = offset
    if key is not None:
        out["messaging.kafka.message.key"] = (
            key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        )
    return out


def span_context_of(traceparent: str | None) -> SpanContext | None:
    """The remote span a W3C ``traceparent`` names (None when absent or malformed).

    >>> ctx = span_context_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    >>> format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    ('0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331')
    >>> span_context_of("garbage") is None
    True
    """
    if not traceparent:
        return None
    ctx = trace.get_current_span(propagate.extract({"traceparent": traceparent}))
    span_context = ctx.get_span_context()
    return span_context if span_context.is_valid else None


class SpanContextMemo:
    """The last ``capacity`` upstream spans by trace id, to link to them later.

    A detection names the trace ids of the records that caused it; the memo
    turns them back into span contexts a :class:`~opentelemetry.trace.Link` needs.
    Oldest entries are forgotten first, so memory stays bounded on any stream.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._by_trace: OrderedDict[str, SpanContext] = OrderedDict()

    def remember(self, key: str, span_context: SpanContext) -> None:
        """Keep ``span_context`` under ``key`` (a trace id, a drift id …)."""
        self._by_trace[key] = span_context
        self._by_trace.move_to_end(key)
        if len(self._by_trace) > self.capacity:
            self._by_trace.popitem(last=False)

    def links(self, keys: Iterable[str]) -> list[Link]:
        """Links to the remembered spans of ``keys`` (unknown keys are left out)."""
        out: list[Link] = []
        for key in dict.fromkeys(keys):
            span_context = self._by_trace.get(key)
            if span_context is not None:
                out.append(Link(span_context))
        return out

    def __len__(self) -> int:
        return len(self._by_trace)
