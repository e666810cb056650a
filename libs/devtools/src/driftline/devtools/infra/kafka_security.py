"""Secure mode of the local broker: its own identity, the SCRAM users, the ACLs.

- The broker's identity is ``kafka`` (``<credentials_dir>/kafka/``: a certificate the
  local CA signs for the broker's host, a PKCS#12 keystore and a SCRAM password), made
  here rather than by :func:`~driftline.devtools.infra.pki.write_credentials` because
  only the broker needs it; ``User:kafka`` is a super user, as the broker's links to
  itself (inter-broker, controller) need.
- Every identity with a ``kafka.password`` becomes a SCRAM user at format time, so the
  broker never runs a moment without them (and no listener is ever plaintext).
- The ACLs are generated from :data:`driftline.contracts.access.KAFKA_ACCESS` and created
  by ``admin`` once the broker answers, through aiokafka's ``CreateAcls`` request (aiokafka
  has no admin call for it; the Kafka jars the node runs carry no ACL command-line tool).

>>> for b in acl_bindings()[:3]:
...     print(b.describe())
ALLOW User:ingestion WRITE TOPIC driftline.events.valid
ALLOW User:ingestion WRITE TOPIC driftline.labels.valid
ALLOW User:ingestion WRITE TOPIC driftline.dlq
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest
from pydantic import SecretStr

from driftline.contracts.access import KAFKA_ACCESS, KafkaAccess
from driftline.contracts.topics import ALL_TOPICS, Topic
from driftline.devtools.infra import pki
from driftline.devtools.infra.errors import StartupError
from driftline.security.credentials import CERT_FILE, KEY_FILE, Credentials
from driftline.security.kafka_auth import (
    KAFKA_PASSWORD_FILE,
    KafkaAuth,
    kafka_client_options,
)

__all__ = [
    "BROKER_IDENTITY",
    "AclBinding",
    "acl_bindings",
    "create_acls",
    "ensure_broker_identity",
    "scram_users",
]

BROKER_IDENTITY = "kafka"
"""The broker's own identity (certificate CN, SCRAM user, super user)."""


class ResourceType(enum.IntEnum):
    """Kafka's ``ResourceType`` codes (``CreateAcls``)."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(enum.IntEnum):
    """Kafka's ``PatternType`` codes."""

    LITERAL = 3
    PREFIXED = 4


class Operation(enum.IntEnum):
    """Kafka's ``AclOperation`` codes (those the table uses)."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8


ALLOW = 3
"""Kafka's ``AclPermissionType.ALLOW``."""


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW ACL: ``principal`` may ``operation`` on a resource, from any host."""

    principal: str
    operation: Operation
    resource_type: ResourceType
    name: str
    pattern: PatternType = PatternType.LITERAL

    def describe(self) -> str:
        """One line, e.g. ``ALLOW User:serving WRITE TOPIC driftline.predictions``."""
        prefix = "*" if self.pattern is PatternType.PREFIXED else ""
        return (
            f"ALLOW {self.principal} {self.operation.name} {self.resource_type.name} "
            f"{self.name}{prefix}"
        )


def _bindings_of(access: KafkaAccess, topics: Sequence[Topic]) -> list[AclBinding]:
    user = f"User:{access.principal}"
    out: list[AclBinding] = []
    for topic in access.produces:
        out.append(AclBinding(user, Operation.WRITE, ResourceType.TOPIC, topic))
    for topic in access.consumes:
        out.append(AclBinding(user, Operation.READ, ResourceType.TOPIC, topic))
    if access.describes_all_topics:
        for t in topics:
            out.append(AclBinding(user, Operation.DESCRIBE, ResourceType.TOPIC, t.name))
    for group in access.groups:
        out.append(
            AclBinding(user, Operation.READ, ResourceType.GROUP, group, PatternType.PREFIXED)
        )
    for txn in access.transactional_ids:
        out.append(
            AclBinding(
                user, Operation.WRITE, ResourceType.TRANSACTIONAL_ID, txn, PatternType.PREFIXED
            )
        )
    for prefix in access.internal_topics:
        for op in (Operation.CREATE, Operation.READ, Operation.WRITE, Operation.DESCRIBE):
            out.append(AclBinding(user, op, ResourceType.TOPIC, prefix, PatternType.PREFIXED))
    return out


def acl_bindings(
    access: Iterable[KafkaAccess] = KAFKA_ACCESS, topics: Sequence[Topic] = ALL_TOPICS
) -> list[AclBinding]:
    """Every ACL the access table gives (no duplicates, table order).

    Idempotent producers need no ``IDEMPOTENT_WRITE`` on the cluster: since Kafka 3.0
    (KIP-679) ``WRITE`` on a topic authorises ``InitProducerId``.
    """
    seen: set[AclBinding] = set()
    out: list[AclBinding] = []
    for a in access:
        for binding in _bindings_of(a, topics):
            if binding not in seen:
                seen.add(binding)
                out.append(binding)
    return out


async def create_acls(
    bootstrap_servers: str, admin: KafkaAuth, bindings: Iterable[AclBinding], timeout_s: float = 30
) -> int:
    """Create ``bindings`` as ``admin`` (a super user); returns how many were sent.

    Creating an ACL that exists changes nothing, so this runs at every start.
    """
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers,
        client_id="driftline-acls",
        **kafka_client_options(admin),
    )
    sent = 0
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        node = next(iter(client.cluster.brokers())).nodeId
        for b in bindings:
            request = CreateAclsRequest(
                b.resource_type, b.name, b.pattern, b.principal, "*", b.operation, ALLOW
            )
            response = await asyncio.wait_for(client.send(node, request), timeout_s)
            for result in response.creation_responses:
                code, message = result[0], result[1]
                if code != 0:
                    raise StartupError(
                        f"creating Kafka ACL '{b.describe()}' as {admin.identity} failed: "
                        f"{message or for_code(code).__name__}"
                    )
            sent += 1
    finally:
        await client.close()
    return sent


def _has_scram_password(directory: Path) -> bool:
    return (directory / KAFKA_PASSWORD_FILE).is_file()


def scram_users(credentials_dir: Path) -> list[tuple[str, SecretStr]]:
    """``(identity, SCRAM password)`` of every identity under ``credentials_dir`` with a
    ``kafka.password`` (the services, admin, client and the broker), sorted by name."""
    out = []
    for directory in sorted(p for p in credentials_dir.iterdir() if p.is_dir()):
        if _has_scram_password(directory):
            out.append(
                (
                    directory.name,
                    Credentials(credentials_dir, directory.name).secret(KAFKA_PASSWORD_FILE),
                )
            )
    return out


def ensure_broker_identity(credentials_dir: Path, hosts: Sequence[str]) -> Credentials:
    """The broker's credentials (``<credentials_dir>/kafka/``), issued by the local CA for
    ``hosts`` (and ``localhost``, ``127.0.0.1``) unless they exist.

    Needs the CA's key (``ca.key``, written by ``driftline infra up --secure``); a
    deployment with its own CA provides ``kafka/`` itself.
    """
    directory = credentials_dir / BROKER_IDENTITY
    wanted = ("tls.p12", "tls.p12.password", CERT_FILE, KEY_FILE, KAFKA_PASSWORD_FILE)
    if not all((directory / f).is_file() for f in wanted):
        if not (credentials_dir / "ca.key").is_file():
            raise StartupError(
                f"secure Kafka: the broker's credentials ({directory}) are missing and there "
                f"is no CA key ({credentials_dir / 'ca.key'}) to issue them; run "
                "`driftline infra up --secure` or provide them"
            )
        names = ["localhost", "127.0.0.1"]
        for host in hosts:
            if host not in names and not _unspecified(host):
                names.append(host)
        ca = pki.load_ca(credentials_dir)
        key, cert = pki.issue(ca, BROKER_IDENTITY, hosts=names)
        pki.write_identity(directory, ca, key, cert)
    return Credentials(credentials_dir, BROKER_IDENTITY)


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
