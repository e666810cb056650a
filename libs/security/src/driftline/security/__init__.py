"""Secure mode's shared parts (see :mod:`driftline.security.credentials` for the layout)."""

from driftline.security.credentials import CA_FILE, Credentials, CredentialsError, credentials_for

__all__ = ["CA_FILE", "Credentials", "CredentialsError", "credentials_for"]
