"""Writing outcomes to their topics, with the record's trace context."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter

from driftline.contracts.messages import DlqReason, ValidEvent
from driftline.contracts.topics import DLQ, EVENTS_VALID, LABELS_VALID, Topic
from driftline.ingestion.core import Accepted, Incoming, IngestionCore, Outcome, Rejected
from driftline.kafkaio import send_model
from driftline.telemetry import start_record_span

tracer = trace.get_tracer("driftline.ingestion")

SIZE_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)
"""Record faults meaning the producer or the broker refused a record's size."""

FAULT_KEEP_BYTES = 1024
"""Bytes of a record its dead letter keeps when writing its outcome was refused for size.

A topic created before ``kafka.max_record_bytes`` was raised keeps its smaller
``max.message.bytes``; a letter keeping this little fits any topic, and the
whole record stays at its source offset (or with the HTTP caller)."""


def fault_letter(
    core: IngestionCore, item: Incoming, exc: BaseException, *, processing: bool = False
) -> Rejected:
    """The dead letter of a record whose outcome could not be written (or computed).

    ``too_large`` when ``exc`` is a size refusal (keeping :data:`FAULT_KEEP_BYTES`),
    ``processing_error`` otherwise; the detail names the error.
    """
    if isinstance(exc, SIZE_ERRORS):
        detail = f"Kafka refused its outcome as too large ({type(exc).__name__}: {exc})"
        return core.reject(item, DlqReason.TOO_LARGE, detail, keep_bytes=FAULT_KEEP_BYTES)
    doing = "processing it" if processing else "writing its outcome"
    detail = f"{doing} raised {type(exc).__name__}: {exc}"
    return core.reject(item, DlqReason.PROCESSING_ERROR, detail)


class OutcomeCounters:
    """``driftline_ingested_records_total{kind, outcome, reason, via}`` on /metrics.

    Every outcome a record can have is created at 0 for both kinds and both ways in,
    so the first dead letter of a reason is an increase the ``DeadLetterRatioHigh``
    alert sees (a counter born at its first count shows ``rate()`` nothing).

    >>> from prometheus_client import generate_latest
    >>> registry = CollectorRegistry()
    >>> _ = OutcomeCounters(registry)
    >>> text = generate_latest(registry).decode()
    >>> 'kind="label",outcome="dead_letter",reason="schema",via="http"} 0.0' in text
    True
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "driftline_ingested_records",
            "Records classified by ingestion",
            ["kind", "outcome", "reason", "via"],
            registry=registry,
        )
        for kind in ("event", "label"):
            for via in ("kafka", "http"):
                self.records.labels(kind, "valid", "", via)
                for reason in DlqReason:
                    self.records.labels(kind, "dead_letter", reason.value, via)

    def count(self, outcomes: Sequence[Outcome], kinds: Sequence[str], via: str) -> None:
        """Count each outcome once."""
        for outcome, kind in zip(outcomes, kinds, strict=True):
            if isinstance(outcome, Accepted):
                self.records.labels(kind, "valid", "", via).inc()
            else:
                self.records.labels(kind, "dead_letter", outcome.reason.value, via).inc()


def destination(outcome: Outcome) -> Topic:
    """The topic an outcome goes to."""
    if isinstance(outcome, Rejected):
        return DLQ
    return EVENTS_VALID if isinstance(outcome.record, ValidEvent) else LABELS_VALID


async def send_outcome(
    producer: AIOKafkaProducer,
    outcome: Outcome,
    ctx: otel_context.Context | None = None,
    *,
    head_sample: bool = False,
) -> asyncio.Future[Any]:
    """Queue one outcome on its topic; returns its delivery future.

    It continues the trace ``ctx`` when given.  A record that arrived without one
    starts a new trace when ``head_sample`` is set and head sampling picks it
    (``telemetry.untraced_sample_ratio``, see :func:`~driftline.telemetry.start_record_span`);
    otherwise no span is opened, so untraced high-rate streams pay next to nothing
    for tracing.  Raises what the producer raises before queueing (a
    ``MessageSizeTooLargeError`` for a record over ``max_request_size``).
    """
    topic = destination(outcome)
    value = outcome.letter if isinstance(outcome, Rejected) else outcome.record
    span = (
        start_record_span(tracer, "ingestion.validate", ctx)
        if ctx is not None or head_sample
        else None
    )
    if span is None:
        return await send_model(producer, topic, outcome.key, value)
    with trace.use_span(span, end_on_exit=True):
        if span.is_recording():
            span.set_attributes(
                {
                    "messaging.destination.name": topic.name,
                    "driftline.outcome": (
                        outcome.reason.value if isinstance(outcome, Rejected) else "valid"
                    ),
                }
            )
        return await send_model(producer, topic, outcome.key, value)


async def send_outcomes(
    producer: AIOKafkaProducer,
    outcomes: Sequence[Outcome],
    contexts: Sequence[otel_context.Context | None],
    *,
    head_sample: bool = False,
) -> list[asyncio.Future[Any]]:
    """Queue every outcome on its topic, in order (see :func:`send_outcome`)."""
    return [
        await send_outcome(producer, outcome, ctx, head_sample=head_sample)
        for outcome, ctx in zip(outcomes, contexts, strict=True)
    ]
