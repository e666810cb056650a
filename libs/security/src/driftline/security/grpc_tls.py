"""Every gRPC server port and client channel of Driftline, plaintext or mutual TLS.

The one place a gRPC link is built, so secure mode cannot be forgotten at a site:
:func:`add_port` binds a server's port and :func:`channel` opens a client channel.
With ``security.enabled`` off they are exactly ``server.add_insecure_port`` and
``grpc.aio.insecure_channel`` (nothing else runs, so the plaintext path costs what it
did). In secure mode:

* a server presents ``<identity>/tls.crt`` and demands a client certificate signed by
  ``ca.crt`` (``require_client_auth``): a plaintext client, a certificate of another
  CA and an expired one fail the handshake and never reach a handler;
* a channel verifies the server against ``ca.crt`` (its address must be one of the
  certificate's names: ``localhost``, ``127.0.0.1``, the identity) and presents its
  own certificate, whose common name is its identity.

:func:`peer_identity` reads that identity (the verified certificate's CN) in a handler,
which is what the registry's roles and serving's API-key exemption are bound to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from driftline.security.credentials import Credentials, credentials_for
from driftline.settings import SecuritySettings

__all__ = [
    "ChannelOptions",
    "add_port",
    "channel",
    "channel_credentials",
    "is_secure",
    "peer_identity",
    "server_credentials",
]

ChannelOptions = Sequence[tuple[str, Any]]

_CN = "x509_common_name"


def is_secure(security: SecuritySettings | None) -> bool:
    """Whether ``security`` asks for secure mode (None: plaintext)."""
    return security is not None and security.enabled


def server_credentials(creds: Credentials) -> grpc.ServerCredentials:
    """TLS with ``creds``' certificate, demanding a client certificate signed by the CA."""
    return grpc.ssl_server_credentials(
        [(creds.key_pem(), creds.cert_pem())],
        root_certificates=creds.ca_pem(),
        require_client_auth=True,
    )


def channel_credentials(creds: Credentials) -> grpc.ChannelCredentials:
    """TLS verifying the server against the CA, presenting ``creds``' certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=creds.ca_pem(),
        private_key=creds.key_pem(),
        certificate_chain=creds.cert_pem(),
    )


def add_port(
    server: grpc.aio.Server, address: str, security: SecuritySettings | None, identity: str
) -> int:
    """Bind ``address`` on ``server`` (plaintext, or mTLS as ``identity`` in secure mode);
    the bound port, 0 when it could not be bound.

    ``identity`` is the default identity (the service's name); ``security.identity``
    overrides it. A missing credential raises
    :class:`~driftline.security.credentials.CredentialsError` naming the file.
    """
    creds = credentials_for(security, identity) if security is not None else None
    if creds is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(creds))


def channel(
    target: str,
    security: SecuritySettings | None,
    identity: str,
    *,
    options: ChannelOptions | None = None,
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``target``: plaintext, or mTLS as ``identity``
    (``security.identity`` overrides it) in secure mode."""
    creds = credentials_for(security, identity) if security is not None else None
    if creds is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, channel_credentials(creds), options=options)


def peer_identity(context: Any) -> str | None:
    """The identity (certificate common name) of the caller of this call, verified
    against the CA by the TLS handshake; None on a plaintext connection."""
    names = context.auth_context().get(_CN)
    if not names:
        return None
    name = names[0]
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
