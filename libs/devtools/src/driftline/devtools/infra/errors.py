"""The errors :mod:`driftline.devtools.infra` raises; each message says what to do next."""

from __future__ import annotations

from driftline.contracts.errors import DriftlineError, FailedPreconditionError

__all__ = [
    "InfraError",
    "MissingToolError",
    "PortInUseError",
    "StartupError",
]


class InfraError(DriftlineError):
    """Root of the local-platform errors."""


class MissingToolError(InfraError, FailedPreconditionError):
    """``java``, ``mvn`` or ``redis-server`` is not installed; says what to install."""


class PortInUseError(InfraError, FailedPreconditionError):
    """A port the platform needs is taken by another process; names the setting to change."""

    def __init__(self, message: str, *, host: str, port: int, setting: str) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        self.setting = setting


class StartupError(InfraError):
    """A component died or never answered while starting; the message carries its log tail."""
