"""Server spans of gRPC handlers that continue the caller's trace from the call metadata."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.util.types import AttributeValue

__all__ = ["context_from_metadata", "rpc_attributes"]


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
