"""Idempotent creation of the declared topics."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from driftline.contracts.errors import FailedPreconditionError
from driftline.contracts.topics import ALL_TOPICS, Topic
from driftline.security.kafka_auth import KafkaAuth, kafka_client_options
from driftline.settings import KafkaSettings

_TOPIC_ALREADY_EXISTS = 36
_TOPIC_AUTHORIZATION_FAILED = 29


def replication_config(replication_factor: int) -> dict[str, str]:
    """Topic configuration that follows from the replication factor: with three replicas
    or more, ``min.insync.replicas=2``, so an ``acks=all`` write is on two brokers before
    it is acknowledged and losing any one broker neither fails writes nor loses one; with
    fewer, nothing (the broker's default: 1 on the single local node).

    >>> replication_config(3)
    {'min.insync.replicas': '2'}
    >>> replication_config(1)
    {}
    """
    return {"min.insync.replicas": "2"} if replication_factor >= 3 else {}


async def provision_topics(
    settings: KafkaSettings,
    topics: Iterable[Topic] = ALL_TOPICS,
    *,
    security: KafkaAuth | None = None,
) -> list[str]:
    """Create every topic that does not exist yet; returns the names it created.

    Safe to run any number of times, from any number of processes at once.  Topics
    are created with ``settings.default_replication_factor`` replicas (and
    :func:`replication_config`) and ``max.message.bytes`` = ``settings.max_message_bytes``; a topic
    that already exists keeps its configuration (change it with
    ``kafka-configs.sh --alter`` when ``kafka.max_record_bytes`` is raised).

    In secure mode only ``admin`` may create the declared topics; a service (which may
    describe them all) finds them there, and one missing is an error saying so.
    """
    wanted = list(topics)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-provision",
        request_timeout_ms=settings.request_timeout_ms,
        **kafka_client_options(security),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name=t.name,
                    num_partitions=t.partitions,
                    replication_factor=settings.default_replication_factor,
                    topic_configs={
                        **replication_config(settings.default_replication_factor),
                        **t.topic_config(settings.max_message_bytes),
                    },
                )
                for t in missing
            ]
        )
        created: list[str] = []
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            if code == 0:
                created.append(name)
            elif code == _TOPIC_ALREADY_EXISTS:
                continue  # created concurrently by another process: fine
            elif code == _TOPIC_AUTHORIZATION_FAILED and security is not None:
                raise FailedPreconditionError(
                    f"topic {name} does not exist and {security.identity} may not create "
                    "it: in secure mode admin provisions the topics (`driftline infra up "
                    "--secure`)"
                )
            else:
                message = entry[2] if len(entry) > 2 and entry[2] else for_code(code).__name__
                raise FailedPreconditionError(f"could not create topic {name}: {message}")
        return created
    finally:
        await admin.close()
