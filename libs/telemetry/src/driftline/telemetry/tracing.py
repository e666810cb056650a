"""Tracer provider setup."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from driftline.settings import TelemetrySettings


def configure_tracing(
    service_name: str,
    settings: TelemetrySettings,
    *,
    extra_processors: list[SpanProcessor] | None = None,
    install_global: bool = True,
) -> TracerProvider:
    """A tracer provider for ``service_name``; exports over OTLP/gRPC when an endpoint is set.

    Spans are always created (so trace ids reach logs and Kafka headers); they
    leave the process only when ``settings.otlp_endpoint`` is configured or an
    extra processor (a test's in-memory exporter) is given.
    """
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.namespace": "driftline"}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if settings.otlp_endpoint:
        # Imported lazily: the exporter pulls in grpc, which not every process needs.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True))
        )
    for processor in extra_processors or ():
        provider.add_span_processor(processor)
    if install_global:
        trace.set_tracer_provider(provider)
    return provider
