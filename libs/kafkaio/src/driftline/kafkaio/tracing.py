"""W3C trace context in Kafka record headers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate

Headers = list[tuple[str, bytes]]


def headers_from_context(ctx: otel_context.Context | None = None) -> Headers:
    """Record headers carrying the trace context of ``ctx`` (default: the current one).

    Empty when no trace is active, so nothing is invented.
    """
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    return [(k, v.encode("ascii")) for k, v in carrier.items()]


def _carrier(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers or ():
        if value is None:
            continue
        try:
            out[key.lower()] = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            # A malformed header must not take the message down with it; the
            # record is still processed, only without a parent trace.
            continue
    return out


def context_from_headers(
    headers: Sequence[tuple[str, bytes]] | None,
) -> otel_context.Context:
    """The trace context a record carries (an empty context when it carries none)."""
    return propagate.extract(_carrier(headers))


def traceparent_of(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The raw ``traceparent`` header value, if present."""
    return _carrier(headers).get("traceparent")
