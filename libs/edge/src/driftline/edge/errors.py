"""A Driftline error ↔ a gRPC status, in both directions.

Servers answer a :class:`DriftlineError` with the status it names
(:func:`status_code_of`). Clients turn a failed call back into an error with
:class:`RpcErrors`: a status that is the server's answer *about the request*
(:data:`REQUEST_REFUSALS`: not found, invalid, ...) becomes the same error class,
which asking again would not change; anything else is the server's own trouble
(unavailable, deadline exceeded, internal, unimplemented) and says which server,
at which address, failed.

>>> errors = RpcErrors("registry", "127.0.0.1:50051", server_failure=DriftlineError)
>>> err = errors.of_status(grpc.StatusCode.NOT_FOUND, "model 'x' is not registered")
>>> type(err).__name__, err.message
('NotFoundError', "registry: model 'x' is not registered")
>>> errors.of_status(grpc.StatusCode.UNAVAILABLE, "connection refused").message
'registry at 127.0.0.1:50051 is unavailable: connection refused'
>>> status_code_of(NotFoundError("gone"))
<StatusCode.NOT_FOUND: (5, 'not found')>
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from driftline.contracts.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    DriftlineError,
    FailedPreconditionError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = [
    "REQUEST_REFUSALS",
    "STATUS_BY_NAME",
    "STATUS_BY_NUMBER",
    "STATUS_NUMBER",
    "RpcErrors",
    "status_code_of",
    "status_name_of",
]

STATUS_BY_NAME: Mapping[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}
STATUS_NUMBER: Mapping[str, int] = {code.name: code.value[0] for code in grpc.StatusCode}
"""A status name's wire number (what a span attribute and a stream answer carry)."""
STATUS_BY_NUMBER: Mapping[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}
"""Every gRPC status code by name (``DriftlineError.grpc_code`` is a name)."""

REQUEST_REFUSALS: Mapping[grpc.StatusCode, type[DriftlineError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.DATA_LOSS: IntegrityError,
}
"""Statuses that answer the request itself, and the error each comes back as."""


def status_name_of(error: DriftlineError) -> str:
    """The name of the status ``error`` is answered with (INTERNAL for a name gRPC lacks)."""
    name = error.grpc_code
    return name if name in STATUS_BY_NAME else "INTERNAL"


def status_code_of(error: DriftlineError) -> grpc.StatusCode:
    """The gRPC status code ``error`` is answered with (INTERNAL for a name gRPC lacks)."""
    return STATUS_BY_NAME[status_name_of(error)]


class RpcErrors:
    """How one client reports the failed calls of one server.

    ``peer`` names the server for a reader ("registry", "feature store") and
    ``target`` is its address. ``refusals`` are the statuses that answer the
    request itself, with the error each becomes; its message is the server's,
    prefixed by ``peer``. Every other status is the server's own failure:
    ``UNAVAILABLE`` becomes :class:`UnavailableError`, ``DEADLINE_EXCEEDED``
    :class:`DeadlineExceededError`, and the rest (``INTERNAL``,
    ``UNIMPLEMENTED``, ...) ``server_failure`` — :class:`UnavailableError` (the
    default) for a dependency that is retried until it recovers, a plain
    :class:`DriftlineError` when asking again would not help.
    """

    def __init__(
        self,
        peer: str,
        target: str,
        *,
        refusals: Mapping[grpc.StatusCode, type[DriftlineError]] = REQUEST_REFUSALS,
        server_failure: type[DriftlineError] = UnavailableError,
    ) -> None:
        self.peer = peer
        self.target = target
        self._refusals = refusals
        self._server_failure = server_failure

    def of_status(
        self,
        code: grpc.StatusCode,
        details: str | None,
        *,
        doing: str = "",
        timeout_s: float | None = None,
    ) -> DriftlineError:
        """The error of a call that ended with ``code`` and ``details``.

        ``doing`` ("listing models") says what the call was for; ``timeout_s``,
        the time the call was given, is named when it ran out.
        """
        detail = details or code.name
        refused = self._refusals.get(code)
        if refused is not None:
            return refused(f"{self.peer}: {detail}")
        where = f"{self.peer} at {self.target}"
        while_ = f" {doing}" if doing else ""
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            within = "in time" if timeout_s is None else f"within {timeout_s * 1000:.0f} ms"
            return DeadlineExceededError(f"{where} did not answer{while_} {within}")
        if code == grpc.StatusCode.UNAVAILABLE:
            return UnavailableError(f"{where} is unavailable{while_}: {detail}")
        return self._server_failure(f"{where} failed{while_} ({code.name}): {detail}")

    def of_rpc(
        self, exc: grpc.aio.AioRpcError, *, doing: str = "", timeout_s: float | None = None
    ) -> DriftlineError:
        """The error of a failed call (see :meth:`of_status`)."""
        return self.of_status(exc.code(), exc.details(), doing=doing, timeout_s=timeout_s)
