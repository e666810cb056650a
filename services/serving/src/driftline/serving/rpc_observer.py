"""What every serving RPC handler shares: trace continuation, status mapping, metrics.

:func:`observed` wraps an async servicer method so that it

* continues the client's trace (W3C ``traceparent`` in the call metadata),
* turns a :class:`DriftlineError` into the gRPC status it names, with its message,
* records latency and outcome code on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from opentelemetry import trace

from driftline.contracts.errors import DriftlineError
from driftline.serving.serving_metrics import ServingMetrics
from driftline.telemetry import RpcServerSpans, context_from_metadata

__all__ = ["observed", "timeout_of"]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("driftline.serving")

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class _HasMetrics(Protocol):
    metrics: ServingMetrics


Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def timeout_of(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """Seconds left before the caller's deadline (None when the caller set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)


def observed(
    service: str, method: str, tracer: trace.Tracer | None = None
) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Decorate a servicer method of ``service`` named ``method`` (see the module doc).

    Spans come from ``tracer`` (the global provider's ``driftline.serving`` when None).
    """

    spans = RpcServerSpans(tracer or _tracer, service, method)

    def wrap(fn: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(fn)
        async def handler(
            self: _HasMetrics, request: Req, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Resp:
            started = time.perf_counter()
            code = "OK"
            failure: BaseException | None = None
            span, token = spans.start(context_from_metadata(context.invocation_metadata()))
            try:
                return await fn(self, request, context)
            except DriftlineError as exc:
                code = exc.grpc_code
                await context.abort(grpc.StatusCode[code], exc.message)
                raise  # abort raises; this line only satisfies the type checker
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                code = context.code().name if context.code() is not None else "UNKNOWN"
                raise
            except Exception as exc:
                code, failure = "INTERNAL", exc
                log.exception("%s/%s failed", service, method)
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"serving failed on this request ({type(exc).__name__}: {exc}); "
                    "it is logged with its trace id",
                )
                raise
            finally:
                spans.end(span, token, code, grpc.StatusCode[code].value[0], failure)
                self.metrics.observe(method, code, time.perf_counter() - started)

        return handler

    return wrap
