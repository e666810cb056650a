"""Traces (OpenTelemetry), metrics (Prometheus) and JSON logs that carry the trace id."""

from driftline.telemetry.logs import JsonFormatter, configure_logging
from driftline.telemetry.metrics import ServiceMetrics
from driftline.telemetry.tracing import configure_tracing

__all__ = ["JsonFormatter", "ServiceMetrics", "configure_logging", "configure_tracing"]
