"""Tracer provider setup, and head sampling of records that arrive without a trace context.

Every new trace is decided once, at its root, by the SDK's ``TraceIdRatioBased``
sampler; every span with a parent follows the parent's decision (``ParentBased``),
so a trace is whole or absent. Roots come in two kinds, with a ratio each:

* ``telemetry.sample_ratio``: a request or a detection that starts a trace (a
  ``Predict`` call without ``traceparent``, a drift detection);
* ``telemetry.untraced_sample_ratio``: a record that reached ingestion without a
  trace context. Producers are rarely instrumented, and without a root here the
  data path (ingestion → features → serving) would never be seen; a small ratio
  keeps a high-rate stream cheap. Such roots carry :data:`HEAD_SAMPLED`.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes, AttributeValue

from driftline.settings import TelemetrySettings

__all__ = ["HEAD_SAMPLED", "RootSampler", "configure_tracing", "start_record_span"]

HEAD_SAMPLED = "driftline.trace.head_sampled"
"""Attribute (``True``) of the root span of a record that arrived without a trace context:
:class:`RootSampler` decides it at ``telemetry.untraced_sample_ratio``."""

_EMPTY = otel_context.Context()
_MARK: dict[str, AttributeValue] = {HEAD_SAMPLED: True}


class RootSampler(Sampler):
    """Decides new traces: :data:`HEAD_SAMPLED` roots at ``untraced_ratio``, others at ``ratio``.

    Both are the SDK's ``TraceIdRatioBased`` (the decision is a function of the
    trace id, so every service would decide a trace alike); wrapped in
    ``ParentBased`` by :func:`configure_tracing`, it is asked only about roots.

    >>> sampler = RootSampler(1.0, 0.25)
    >>> def decide(trace_id, attributes=None):
    ...     result = sampler.should_sample(None, trace_id, "s", attributes=attributes)
    ...     return result.decision.is_sampled()
    >>> decide(2**63), decide(2**62 - 1, _MARK), decide(2**62 + 1, _MARK)
    (True, True, False)
    """

    def __init__(self, ratio: float, untraced_ratio: float) -> None:
        self._traced = TraceIdRatioBased(ratio)
        self._untraced = TraceIdRatioBased(untraced_ratio)

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        head = attributes is not None and attributes.get(HEAD_SAMPLED) is True
        return (self._untraced if head else self._traced).should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return (
            f"RootSampler{{traced={self._traced.get_description()},"
            f"untraced={self._untraced.get_description()}}}"
        )


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
        sampler=ParentBased(RootSampler(settings.sample_ratio, settings.untraced_sample_ratio)),
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


def start_record_span(
    tracer: trace.Tracer,
    name: str,
    parent: otel_context.Context | None,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
) -> trace.Span | None:
    """The span of one record: under ``parent``, the context the record carried, or, for a
    record that carried none (``parent`` None), the root of a new trace if head sampling
    picks it.

    None for an untraced record that was not picked: it goes on without a trace
    context (no ``traceparent`` header), so a stream nobody traces costs its
    consumers nothing. The caller ends the span; attributes are for it to set
    (only when ``span.is_recording()``, to spend nothing on unsampled spans).
    """
    if parent is not None:
        return tracer.start_span(name, context=parent, kind=kind)
    span = tracer.start_span(name, context=_EMPTY, kind=kind, attributes=_MARK)
    if span.get_span_context().trace_flags.sampled:
        return span
    span.end()
    return None
