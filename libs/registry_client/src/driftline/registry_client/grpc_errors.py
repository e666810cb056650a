"""gRPC status codes ↔ the Driftline error classes."""

from __future__ import annotations

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

__all__ = ["error_from_rpc", "status_code_of"]

_BY_CODE: dict[grpc.StatusCode, type[DriftlineError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.DATA_LOSS: IntegrityError,
}


def status_code_of(error: DriftlineError) -> grpc.StatusCode:
    """The gRPC status code a Driftline error is reported with."""
    try:
        return grpc.StatusCode[error.grpc_code]
    except KeyError:
        return grpc.StatusCode.INTERNAL


def error_from_rpc(exc: grpc.aio.AioRpcError, target: str) -> DriftlineError:
    """The Driftline error for a failed call; unknown codes become a plain DriftlineError."""
    detail = exc.details() or exc.code().name
    cls = _BY_CODE.get(exc.code())
    if cls is UnavailableError:
        return UnavailableError(f"registry at {target} is unavailable: {detail}")
    if cls is None:
        return DriftlineError(f"registry at {target} failed ({exc.code().name}): {detail}")
    return cls(detail)
