"""One error hierarchy for the whole platform.

Each error knows the gRPC status name and HTTP status it maps to, and whether
retrying can help.  Transports translate at the edge (the gRPC status name is a
string so this library does not depend on grpcio: ``grpc.StatusCode[e.grpc_code]``).

>>> err = NotFoundError("model 'loans' has no version 7")
>>> err.grpc_code, err.http_status, err.retriable
('NOT_FOUND', 404, False)
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AlreadyExistsError",
    "DeadlineExceededError",
    "DriftlineError",
    "FailedPreconditionError",
    "IntegrityError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "UnauthenticatedError",
    "UnavailableError",
]


class DriftlineError(Exception):
    """Root of every error Driftline raises on purpose."""

    grpc_code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500
    retriable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(DriftlineError):
    """The caller sent something malformed; the message says what and how to fix it."""

    grpc_code = "INVALID_ARGUMENT"
    http_status = 422


class NotFoundError(DriftlineError):
    """A named thing (model, version, alias, feature set, entity) does not exist."""

    grpc_code = "NOT_FOUND"
    http_status = 404


class AlreadyExistsError(DriftlineError):
    """Creating something that is already there."""

    grpc_code = "ALREADY_EXISTS"
    http_status = 409


class FailedPreconditionError(DriftlineError):
    """The system is not in a state where the request can be carried out."""

    grpc_code = "FAILED_PRECONDITION"
    http_status = 409


class UnauthenticatedError(DriftlineError):
    """Missing or wrong credentials."""

    grpc_code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDeniedError(DriftlineError):
    """Credentials are valid but do not allow this."""

    grpc_code = "PERMISSION_DENIED"
    http_status = 403


class UnavailableError(DriftlineError):
    """A dependency is down or not ready yet; retrying later can succeed."""

    grpc_code = "UNAVAILABLE"
    http_status = 503
    retriable = True


class DeadlineExceededError(DriftlineError):
    """The work did not finish within the caller's deadline."""

    grpc_code = "DEADLINE_EXCEEDED"
    http_status = 504
    retriable = True


class IntegrityError(DriftlineError):
    """Stored data failed a digest or signature check and must not be used."""

    grpc_code = "DATA_LOSS"
    http_status = 500
