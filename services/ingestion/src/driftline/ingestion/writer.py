"""Writing outcomes to their topics, with the record's trace context."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter

from driftline.contracts.messages import ValidEvent
from driftline.contracts.topics import DLQ, EVENTS_VALID, LABELS_VALID, Topic
from driftline.ingestion.core import Accepted, Outcome, Rejected
from driftline.kafkaio import send_model

tracer = trace.get_tracer("driftline.ingestion")


class OutcomeCounters:
    """``driftline_ingested_records_total{kind, outcome, reason, via}`` on /metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "driftline_ingested_records",
            "Records classified by ingestion",
            ["kind", "outcome", "reason", "via"],
            registry=registry,
        )

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


async def send_outcomes(
    producer: AIOKafkaProducer,
    outcomes: Sequence[Outcome],
    contexts: Sequence[otel_context.Context | None],
) -> list[asyncio.Future[Any]]:
    """Queue every outcome on its topic; each continues the trace its record carried.

    A span is opened only for records that arrived inside a trace, so untraced
    high-rate streams pay nothing for tracing.
    """
    futures: list[asyncio.Future[Any]] = []
    for outcome, ctx in zip(outcomes, contexts, strict=True):
        topic = destination(outcome)
        value = outcome.letter if isinstance(outcome, Rejected) else outcome.record
        if ctx is None:
            futures.append(await send_model(producer, topic, outcome.key, value))
            continue
        with tracer.start_as_current_span(
            "ingestion.validate",
            context=ctx,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.destination.name": topic.name,
                "driftline.outcome": (
                    outcome.reason.value if isinstance(outcome, Rejected) else "valid"
                ),
            },
        ):
            futures.append(await send_model(producer, topic, outcome.key, value))
    return futures
