"""Server spans of gRPC handlers that continue the caller's trace from the call metadata."""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import Token

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

__all__ = ["RpcServerSpans", "context_from_metadata", "rpc_attributes"]


def context_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> otel_context.Context | None:
    """The trace context of a call's ``traceparent``/``tracestate`` metadata (None: none sent).

    >>> ctx = context_from_metadata(
    ...     [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    ... )
    >>> ctx is not None
    True
    >>> context_from_metadata([("authorization", "Bearer x")]) is None
    True
    """
    carrier = {
        k: v for k, v in metadata or () if k in ("traceparent", "tracestate") and isinstance(v, str)
    }
    return propagate.extract(carrier) if carrier else None


def rpc_attributes(service: str, method: str) -> dict[str, AttributeValue]:
    """``rpc.*`` attributes of a gRPC span (``service`` is the full name, ``driftline.v1.X``)."""
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
"""Status codes that mark a gRPC *server* span as failed (the semantic conventions:
the others are the caller's doing and leave the span's status unset)."""


class RpcServerSpans:
    """SERVER spans of one gRPC method: started, made current, ended.

    The span ``tracer.start_as_current_span`` makes, without its layers of
    context managers (a handler pays for its span on every request).
    ``rpc.grpc.status_code`` is set on every span; the status follows the
    semantic conventions for servers (ERROR only for the server's own
    failures), and only an unexpected exception is recorded on the span.

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> spans = RpcServerSpans(
    ...     TracerProvider().get_tracer("doc"), "driftline.v1.Predictor", "Predict"
    ... )
    >>> span, token = spans.start(None)
    >>> trace.get_current_span() is span
    True
    >>> RpcServerSpans.end(span, token, "NOT_FOUND", 5)
    >>> span.attributes["rpc.grpc.status_code"], span.status.is_unset
    (5, True)
    """

    def __init__(self, tracer: trace.Tracer, service: str, method: str) -> None:
        self._tracer = tracer
        self.name = f"{service}/{method}"
        self._attributes = rpc_attributes(service, method)

    def start(
        self, parent: otel_context.Context | None
    ) -> tuple[trace.Span, Token[otel_context.Context]]:
        """A new current SERVER span under ``parent`` (a new trace when None) and the token
        that :meth:`end` needs."""
        span = self._tracer.start_span(
            self.name, context=parent, kind=trace.SpanKind.SERVER, attributes=self._attributes
        )
        return span, otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def end(
        span: trace.Span,
        token: Token[otel_context.Context],
        code: str,
        number: int,
        error: BaseException | None = None,
    ) -> None:
        """End ``span`` with gRPC status ``code`` (name and number); ``error``, an
        unexpected exception, is recorded on it."""
        otel_context.detach(token)
        span.set_attribute("rpc.grpc.status_code", number)
        if error is not None:
            span.record_exception(error)
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code))
        span.end()
