"""The server side of the edge: one wrapper around every servicer method.

A service declares one :class:`ServerEdge` and decorates its methods with
:meth:`ServerEdge.unary` (a unary response, whether the request is one message
or a stream) or :meth:`ServerEdge.server_stream` (an async generator of
responses). Each call then

1. continues the caller's trace: a SERVER span under the W3C ``traceparent`` of
   the call metadata (a trace of its own when none came), current while the
   handler runs;
2. is refused with ``DEADLINE_EXCEEDED`` when the caller's deadline has already
   passed as it starts: the caller was told the call failed, so doing the work
   (a change above all) would act on a request nobody waits for;
3. of a ``guarded`` method, passes the servicer's ``authorize`` hook — the one
   place where who may call what is decided;
4. answers a :class:`DriftlineError` with the status it names and its message,
   and anything unexpected with ``INTERNAL``, logged with its trace id;
5. is recorded by the servicer's ``record_rpc(method, code, seconds)``, so each
   service keeps its own metric names.

The wrapper is written for serving's per-request path (its p50 is a benchmark
figure): no context managers, and nothing allocated per call beyond the span and
its context token; the metric is the servicer's own bound method.
:meth:`ServerEdge.messages` does the same for each message of a stream that is
answered on its own (a trace parent per message, a status in the answer).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeAlias, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from driftline.contracts.errors import DeadlineExceededError, DriftlineError
from driftline.edge.errors import STATUS_BY_NAME, STATUS_NUMBER, status_name_of
from driftline.telemetry import RpcServerSpans, context_from_metadata

__all__ = [
    "Context",
    "GuardedServicer",
    "MessageEdge",
    "RecordsRpcs",
    "RpcFailed",
    "ServerEdge",
    "time_left",
]

log = logging.getLogger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class RecordsRpcs(Protocol):
    """What a servicer wrapped by the edge provides: its RPC metric."""

    def record_rpc(self, method: str, code: str, seconds: float) -> None:
        """Record one call of ``method`` that ended with status ``code`` (a name)."""


class GuardedServicer(RecordsRpcs, Protocol):
    """A servicer with ``guarded`` methods: the edge asks it before each of their calls."""

    def authorize(self, method: str, context: Context) -> None:
        """Raise a :class:`DriftlineError` (UNAUTHENTICATED, PERMISSION_DENIED) to refuse."""


S = TypeVar("S", bound=RecordsRpcs)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
A = TypeVar("A")
T = TypeVar("T")
Unary: TypeAlias = Callable[[S, Req, Context], Awaitable[Resp]]
ServerStream: TypeAlias = Callable[[S, Req, Context], AsyncIterator[Resp]]


def time_left(context: Context) -> float | None:
    """Seconds left before the caller's deadline (None when the caller set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)


class RpcFailed(Exception):
    """One answer that is a status (``code``, a name) and ``message`` instead of a response."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ServerEdge:
    """The edge of one gRPC service (``service``: its full name, ``driftline.v1.Registry``).

    ``component`` names the server in the message of an unexpected failure
    ("serving failed on this request ..."); spans come from ``tracer``.
    """

    def __init__(self, service: str, tracer: trace.Tracer, *, component: str) -> None:
        self.service = service
        self.component = component
        self._tracer = tracer

    def unary(
        self, method: str, *, guarded: bool = False
    ) -> Callable[[Unary[S, Req, Resp]], Unary[S, Req, Resp]]:
        """Wrap the handler of ``method``, which returns one response (see the module doc).

        With ``guarded``, the servicer's ``authorize(method, context)`` runs first
        (the servicer must be a :class:`GuardedServicer`).
        """
        spans = RpcServerSpans(self._tracer, self.service, method)
        expired = _expired_message(method)
        failed = self._failed

        def wrap(fn: Unary[S, Req, Resp]) -> Unary[S, Req, Resp]:
            @functools.wraps(fn)
            async def handler(servicer: S, request: Req, context: Context) -> Resp:
                started = time.perf_counter()
                span, token = spans.start(context_from_metadata(context.invocation_metadata()))
                try:
                    _admit(servicer, context, method, expired, guarded)
                    response = await fn(servicer, request, context)
                except BaseException as exc:
                    await failed(servicer, method, exc, context, (span, token, started))
                    raise
                _record(servicer, method, span, token, "OK", None, started)
                return response

            return handler

        return wrap

    def server_stream(
        self, method: str, *, guarded: bool = False
    ) -> Callable[[ServerStream[S, Req, Resp]], ServerStream[S, Req, Resp]]:
        """Wrap the async-generator handler of ``method``, which streams its responses.

        The span and the metric cover the whole stream; a failure after some
        responses were sent ends the stream with the failure's status.
        """
        spans = RpcServerSpans(self._tracer, self.service, method)
        expired = _expired_message(method)
        failed = self._failed

        def wrap(fn: ServerStream[S, Req, Resp]) -> ServerStream[S, Req, Resp]:
            @functools.wraps(fn)
            async def handler(servicer: S, request: Req, context: Context) -> AsyncIterator[Resp]:
                started = time.perf_counter()
                span, token = spans.start(context_from_metadata(context.invocation_metadata()))
                try:
                    _admit(servicer, context, method, expired, guarded)
                    async for response in fn(servicer, request, context):
                        yield response
                except BaseException as exc:
                    await failed(servicer, method, exc, context, (span, token, started))
                    raise
                _record(servicer, method, span, token, "OK", None, started)

            return handler

        return wrap

    def messages(self, method: str) -> MessageEdge:
        """The edge of each message of ``method``'s stream that is answered on its own."""
        return MessageEdge(RpcServerSpans(self._tracer, self.service, method), method)

    async def _failed(
        self,
        servicer: Any,
        method: str,
        exc: BaseException,
        context: Context,
        call: tuple[Any, Any, float],
    ) -> None:
        """End the call of ``method`` that raised ``exc``: record it (``call`` is its span,
        context token and start), then abort with its status, which raises; returns when
        the call is answered already, for the handler to re-raise ``exc``."""
        code, message, failure = self._failure_of(method, exc, context)
        span, token, started = call
        _record(servicer, method, span, token, code, failure, started)
        await _abort(context, code, message)

    def _failure_of(
        self, method: str, exc: BaseException, context: Context
    ) -> tuple[str, str | None, BaseException | None]:
        """``(status name, message to abort with, unexpected error)`` of a call that raised
        ``exc``; no message when the call is answered already (aborted, cancelled)."""
        if isinstance(exc, DriftlineError):
            return status_name_of(exc), exc.message, None
        if isinstance(exc, grpc.aio.AbortError):
            answered = context.code()
            return (answered.name if answered is not None else "UNKNOWN"), None, None
        if isinstance(exc, Exception):
            log.exception("%s/%s failed", self.service, method)
            return (
                "INTERNAL",
                f"{self.component} failed on this request ({type(exc).__name__}: {exc}); "
                "it is logged with its trace id",
                exc,
            )
        # asyncio.CancelledError, GeneratorExit: the caller went away.
        return "CANCELLED", None, None


class MessageEdge:
    """Span, status and metric of each message of a stream answered on its own.

    A read on a stream is a call in all but name: its caller's trace comes with
    the message, and its failure is an answer on the stream, not the end of it.
    """

    def __init__(self, spans: RpcServerSpans, method: str) -> None:
        self._spans = spans
        self._method = method

    async def answer(
        self,
        servicer: RecordsRpcs,
        parent: otel_context.Context | None,
        fn: Callable[[A], Awaitable[T]],
        message: A,
    ) -> T:
        """``fn(message)`` in a SERVER span under ``parent``, recorded by the servicer.

        A :class:`DriftlineError` is raised as :class:`RpcFailed` (its status and
        message); an unexpected error is recorded on the span (INTERNAL) and raised
        as it is, for the stream to answer.
        """
        started = time.perf_counter()
        code = "OK"
        failure: BaseException | None = None
        span, token = self._spans.start(parent)
        try:
            return await fn(message)
        except DriftlineError as exc:
            code = status_name_of(exc)
            raise RpcFailed(code, exc.message) from None
        except Exception as exc:
            code, failure = "INTERNAL", exc
            raise
        except BaseException:
            code = "CANCELLED"
            raise
        finally:
            RpcServerSpans.end(span, token, code, STATUS_NUMBER[code], failure)
            servicer.record_rpc(self._method, code, time.perf_counter() - started)


def _admit(servicer: Any, context: Context, method: str, expired: str, guarded: bool) -> None:
    """Refuse a call whose deadline has passed (nothing is done), then run the auth hook."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceededError(expired)
    if guarded:
        servicer.authorize(method, context)


async def _abort(context: Context, code: str, message: str | None) -> None:
    """End the call with status ``code`` and ``message`` (raises); nothing when the call
    is answered already (``message`` None: aborted, cancelled)."""
    if message is not None:
        await context.abort(STATUS_BY_NAME[code], message)


def _record(
    servicer: Any, method: str, span: Any, token: Any, code: str,
    failure: BaseException | None, started: float,
) -> None:  # fmt: skip
    """End the server span and record the RPC on the service's metric."""
    RpcServerSpans.end(span, token, code, STATUS_NUMBER[code], failure)
    servicer.record_rpc(method, code, time.perf_counter() - started)


def _expired_message(method: str) -> str:
    return f"{method}: the caller's deadline had passed when the request arrived; nothing was done"
