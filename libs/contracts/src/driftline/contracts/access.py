"""Who may do what on Kafka: each service's topics, consumer groups and transactional ids.

Declared once, next to :mod:`driftline.contracts.topics`; secure mode's broker ACLs are
generated from it (``driftline.devtools.infra.kafka_acls``), so a service holds exactly
the rights its code uses and no more. A unit test reads the services' code against it.

- ``produces``/``consumes``: topics the service writes (WRITE) and reads (READ).
- ``groups``: consumer-group *prefixes* the service joins or commits to (READ on each
  group whose id starts with one): a setting may suffix them (``training.consumer_group``
  and its ``-retrain`` group).
- ``transactional_ids``: transactional-id prefixes (WRITE): ingestion's
  ``driftline-ingestion-<instance>``.
- ``internal_topics``: prefixes of topics the service creates and owns (CREATE, READ,
  WRITE): the features worker's compacted entity-state changelog.

``admin`` (the CLI and ops) is a Kafka super user and is not listed; it provisions the
declared topics. Every service principal may DESCRIBE every declared topic (metadata and
offsets, no record): services check at start that the topics exist, and only see those
they may describe.

Groups and transactional ids are the settings' defaults: a deployment that renames
``*.consumer_group`` renames the group here too.

>>> access_of("ingestion").may_write(MODELS.name)
False
>>> [a.principal for a in KAFKA_ACCESS if a.may_write(MODELS.name)]
['registry']
"""

from __future__ import annotations

from dataclasses import dataclass

from driftline.contracts.topics import (
    DLQ,
    DRIFT,
    EVENTS,
    EVENTS_VALID,
    FEATURES,
    LABELS,
    LABELS_VALID,
    MODELS,
    PREDICTIONS,
    RETRAIN,
)

__all__ = [
    "ADMIN_PRINCIPAL",
    "KAFKA_ACCESS",
    "KafkaAccess",
    "access_of",
]

ADMIN_PRINCIPAL = "admin"
"""The super user: provisioning, ACLs, the CLI (its demo, ``dlq`` commands)."""


@dataclass(frozen=True)
class KafkaAccess:
    """What one principal (``User:<principal>``, the SCRAM user = the identity) may do."""

    principal: str
    produces: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    transactional_ids: tuple[str, ...] = ()
    internal_topics: tuple[str, ...] = ()
    describes_all_topics: bool = True
    """DESCRIBE on every declared topic (the start-up existence check of provisioning)."""

    def may_write(self, topic: str) -> bool:
        """Whether the principal may produce to ``topic``."""
        return topic in self.produces or self._internal(topic)

    def may_read(self, topic: str) -> bool:
        """Whether the principal may consume ``topic``."""
        return topic in self.consumes or self._internal(topic)

    def _internal(self, topic: str) -> bool:
        return any(topic.startswith(prefix) for prefix in self.internal_topics)


KAFKA_ACCESS: tuple[KafkaAccess, ...] = (
    KafkaAccess(
        "ingestion",
        produces=(EVENTS_VALID.name, LABELS_VALID.name, DLQ.name),
        consumes=(EVENTS.name, LABELS.name),
        groups=("driftline-ingestion",),
        transactional_ids=("driftline-ingestion-",),
    ),
    KafkaAccess(
        "features",
        produces=(FEATURES.name, DLQ.name),
        # events.valid: the worker; features: the online store's rebuild from the log.
        consumes=(EVENTS_VALID.name, FEATURES.name),
        groups=("driftline-features",),
        internal_topics=("driftline-features-",),
    ),
    KafkaAccess(
        "training",
        consumes=(FEATURES.name, LABELS_VALID.name, RETRAIN.name),
        groups=("driftline-training",),
    ),
    KafkaAccess(
        "registry",
        produces=(MODELS.name,),
        consumes=(MODELS.name,),
    ),
    KafkaAccess(
        "serving",
        produces=(PREDICTIONS.name,),
        consumes=(MODELS.name,),
    ),
    KafkaAccess(
        "monitoring",
        produces=(DRIFT.name, RETRAIN.name),
        consumes=(FEATURES.name, PREDICTIONS.name, LABELS_VALID.name, MODELS.name),
        groups=("driftline-monitoring",),
        # The active monitor's producer: one id for all replicas fences the previous one.
        transactional_ids=("driftline-monitoring-",),
    ),
    # A public producer of raw events and labels (what ingestion validates).
    KafkaAccess(
        "client",
        produces=(EVENTS.name, LABELS.name),
        describes_all_topics=False,
    ),
)
"""Every principal but the super user ``admin``."""


def access_of(principal: str) -> KafkaAccess:
    """The declared access of ``principal``; :class:`KeyError` names the known ones."""
    for access in KAFKA_ACCESS:
        if access.principal == principal:
            return access
    known = ", ".join(a.principal for a in KAFKA_ACCESS)
    raise KeyError(f"no Kafka access is declared for {principal!r}; known: {known}")
