"""Driftline's contracts: topic declarations, message models, the error hierarchy."""

from driftline.contracts import errors, messages, topics

__all__ = ["errors", "messages", "topics"]
