"""Traces (OpenTelemetry), metrics (Prometheus) and JSON logs that carry the trace id."""

from driftline.telemetry.consumer_health import ConsumerHealth
from driftline.telemetry.logs import JsonFormatter, configure_logging
from driftline.telemetry.messaging import SpanContextMemo, messaging_attributes, span_context_of
from driftline.telemetry.metrics import Children, ServiceMetrics
from driftline.telemetry.rpc_spans import RpcServerSpans, context_from_metadata, rpc_attributes
from driftline.telemetry.tracing import (
    HEAD_SAMPLED,
    RootSampler,
    configure_tracing,
    start_record_span,
)

__all__ = [
    "HEAD_SAMPLED",
    "Children",
    "ConsumerHealth",
    "JsonFormatter",
    "RootSampler",
    "RpcServerSpans",
    "ServiceMetrics",
    "SpanContextMemo",
    "configure_logging",
    "configure_tracing",
    "context_from_metadata",
    "messaging_attributes",
    "rpc_attributes",
    "span_context_of",
    "start_record_span",
]
