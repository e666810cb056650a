"""Kafka clients in secure mode: SASL_SSL with a SCRAM user per identity, over mutual TLS.

Every aiokafka client of the platform (producers, consumers, admin clients, readiness
probes) gets its security options from :func:`kafka_client_options`, one function, so a
client that forgot secure mode cannot exist. A process builds its :class:`KafkaAuth` once
with :func:`kafka_auth` (``None`` when secure mode is off: the options are then empty and
the client speaks plaintext exactly as before) and hands it to the client factories.

The broker (``driftline.devtools.infra.kafka_node``) takes the SCRAM user from SASL (the
principal ACLs name, ``User:<identity>``) and, as ``ssl.client.auth=required``, refuses
at the handshake a client whose certificate the CA did not sign or that expired.

The password is a :class:`pydantic.SecretStr` until :func:`kafka_client_options` hands it
to aiokafka, so a :class:`KafkaAuth` in a log line, an error or a span shows ``**********``.

>>> kafka_client_options(None)
{}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from driftline.security.credentials import Credentials, credentials_for
from driftline.settings import SecuritySettings

__all__ = [
    "KAFKA_PASSWORD_FILE",
    "KafkaAuth",
    "kafka_auth",
    "kafka_auth_of",
    "kafka_client_options",
]

KAFKA_PASSWORD_FILE = "kafka.password"
"""The file in ``<credentials_dir>/<identity>/`` holding the identity's SCRAM password."""

SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]


@dataclass(frozen=True)
class KafkaAuth:
    """Who a Kafka client is (SCRAM user ``identity``) and the TLS files it proves it with."""

    identity: str
    password: SecretStr
    mechanism: SaslMechanism
    ca_file: Path
    cert_file: Path
    key_file: Path


def kafka_auth_of(
    credentials: Credentials, mechanism: SaslMechanism = "SCRAM-SHA-512"
) -> KafkaAuth:
    """The Kafka client identity of ``credentials``; :class:`CredentialsError` names a
    missing file (CA, certificate, key or ``kafka.password``) now rather than at connect."""
    return KafkaAuth(
        identity=credentials.identity,
        password=credentials.secret(KAFKA_PASSWORD_FILE),
        mechanism=mechanism,
        ca_file=credentials.ca_file,
        cert_file=credentials.cert_file,
        key_file=credentials.key_file,
    )


def kafka_auth(security: SecuritySettings, identity: str) -> KafkaAuth | None:
    """This process's Kafka identity (``security.identity``, else ``identity``: a service's
    name, ``admin`` for the CLI), or ``None`` when secure mode is off."""
    credentials = credentials_for(security, identity)
    if credentials is None:
        return None
    return kafka_auth_of(credentials, security.kafka_sasl_mechanism)


def kafka_client_options(auth: KafkaAuth | None) -> dict[str, Any]:
    """The aiokafka keyword options of ``auth``: ``SASL_SSL`` with its SCRAM user and a TLS
    context that verifies the broker against the CA and presents the identity's certificate;
    ``{}`` (plaintext, the default of every aiokafka client) when ``auth`` is ``None``.

    The returned dict holds the password in clear for aiokafka: pass it straight to the
    client's constructor, never log it.
    """
    if auth is None:
        return {}
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": auth.mechanism,
        "sasl_plain_username": auth.identity,
        "sasl_plain_password": auth.password.get_secret_value(),
        "ssl_context": create_ssl_context(
            cafile=str(auth.ca_file), certfile=str(auth.cert_file), keyfile=str(auth.key_file)
        ),
    }
