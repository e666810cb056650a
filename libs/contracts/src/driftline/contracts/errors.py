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

    def __init_subclass__(
        cls,
        *,
        grpc_code: str = "",
        http_status: int = 0,
        retriable: bool = False,
        **kwargs: object,
    ) -> None:
        """Set a subclass's mapping from its class keywords (the root's where not given)."""
        super().__init_subclass__(**kwargs)
        if grpc_code:
            cls.grpc_code = grpc_code
        if http_status:
            cls.http_status = http_status
        if retriable:
            cls.retriable = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(DriftlineError, grpc_code="INVALID_ARGUMENT", http_status=422):
    """The caller sent something malformed; the message says what and how to fix it."""


class NotFoundError(DriftlineError, grpc_code="NOT_FOUND", http_status=404):
    """A named thing (model, version, alias, feature set, entity) does not exist."""


class AlreadyExistsError(DriftlineError, grpc_code="ALREADY_EXISTS", http_status=409):
    """Creating something that is already there."""


class FailedPreconditionError(DriftlineError, grpc_code="FAILED_PRECONDITION", http_status=409):
    """The system is not in a state where the request can be carried out."""


class UnauthenticatedError(DriftlineError, grpc_code="UNAUTHENTICATED", http_status=401):
    """Missing or wrong credentials."""


class PermissionDeniedError(DriftlineError, grpc_code="PERMISSION_DENIED", http_status=403):
    """Credentials are valid but do not allow this."""


class UnavailableError(DriftlineError, grpc_code="UNAVAILABLE", http_status=503, retriable=True):
    """A dependency is down or not ready yet; retrying later can succeed."""


class DeadlineExceededError(
    DriftlineError, grpc_code="DEADLINE_EXCEEDED", http_status=504, retriable=True
):
    """The work did not finish within the caller's deadline."""


class IntegrityError(DriftlineError, grpc_code="DATA_LOSS", http_status=500):
    """Stored data failed a digest or signature check and must not be used."""
