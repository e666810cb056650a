"""Traces (OpenTelemetry), metrics (Prometheus) and JSON logs that carry the trace id."""

from driftline.telemetry.consumer_health import ConsumerHealth
from driftline.telemetry.logs import JsonFormatter, configure_logging
from driftline.telemetry.messaging import SpanContextMemo, messaging_attributes, span_context_of
from driftline.telemetry.metrics import Children, ServiceMetrics
from driftline.telemetry.rpc_spans import RpcServerSpans, context_from_metadata, rpc_attributes
from driftline.telemetry.tracing import configure_tracing

__all__ = [
    "Children",
    "ConsumerHealth",
    "JsonFormatter",
    "RpcServerSpans",
    "ServiceMetrics",
    "SpanContextMemo",
    "configure_logging",
    "configure_tracing",
    "context_from_metadata",
    "messaging_attributes",
    "rpc_attributes",
    "span_context_of",
]
