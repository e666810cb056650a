"""Producer and consumer factories and JSON encoding."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from driftline.contracts.errors import UnavailableError
from driftline.contracts.topics import Topic
from driftline.kafkaio.tracing import headers_from_context
from driftline.security.kafka_auth import KafkaAuth, kafka_client_options
from driftline.settings import KafkaSettings


def encode_value(value: BaseModel) -> bytes:
    """UTF-8 JSON of a message model."""
    return value.model_dump_json().encode("utf-8")


def make_producer(
    settings: KafkaSettings,
    name: str,
    *,
    security: KafkaAuth | None = None,
    **overrides: Any,
) -> AIOKafkaProducer:
    """An idempotent producer (``acks=all``) named ``<client_id>-<name>``; not started.

    Its ``max_request_size`` is :attr:`KafkaSettings.max_message_bytes`, the
    ``max.message.bytes`` the topics are created with, so what the producer lets
    through the broker takes. ``security``: secure mode's identity
    (:func:`driftline.security.kafka_auth.kafka_auth`); ``None`` is plaintext.
    """
    options: dict[str, Any] = {
        **kafka_client_options(security),
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.client_id}-{name}",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "request_timeout_ms": settings.request_timeout_ms,
        "max_request_size": settings.max_message_bytes,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def group_session(timeout_s: float) -> dict[str, int]:
    """Consumer options: the group drops a member silent for ``timeout_s`` (Kafka's
    ``session.timeout.ms``), heartbeats every fifth of it.

    >>> group_session(6)
    {'session_timeout_ms': 6000, 'heartbeat_interval_ms': 1200}
    """
    ms = int(timeout_s * 1000)
    return {"session_timeout_ms": ms, "heartbeat_interval_ms": max(ms // 5, 300)}


def make_consumer(
    settings: KafkaSettings,
    name: str,
    *topics: Topic,
    group_id: str | None,
    security: KafkaAuth | None = None,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """A consumer of ``topics`` in ``group_id`` with manual commits; not started.

    Offsets are committed by the caller after the effects of a batch are durable,
    which is what makes delivery at-least-once. ``security`` as for :func:`make_producer`.
    """
    options: dict[str, Any] = {
        **kafka_client_options(security),
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.client_id}-{name}",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "request_timeout_ms": settings.request_timeout_ms,
        # A partition's fetch always has room for the largest record a topic takes.
        "max_partition_fetch_bytes": max(settings.max_message_bytes, 1024 * 1024),
    }
    options.update(overrides)
    return AIOKafkaConsumer(*(t.name for t in topics), **options)


async def read_from_start(consumer: AIOKafkaConsumer, topic: Topic) -> dict[TopicPartition, int]:
    """Assign ``consumer`` (started, in no group) every partition of ``topic`` from its
    start; returns the end offsets as of now, which say when it has read all there was.

    The declaration is the contract for the partition count, so no metadata is awaited.
    """
    tps = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return dict(await consumer.end_offsets(tps))


async def send_model(
    producer: AIOKafkaProducer,
    topic: Topic,
    key: str | None,
    value: BaseModel,
    *,
    extra_headers: list[tuple[str, bytes]] | None = None,
) -> asyncio.Future[Any]:
    """Queue ``value`` on ``topic`` with the current trace context; returns the delivery future.

    Raises :class:`TypeError` if ``value`` is not one of the topic's declared models,
    so a wrong payload cannot reach a topic.
    """
    if not isinstance(value, topic.value_models):
        carried = " or ".join(m.__name__ for m in topic.value_models)
        raise TypeError(f"{topic.name} carries {carried}, not {type(value).__name__}")
    headers = headers_from_context() + list(extra_headers or ())
    fut: asyncio.Future[Any] = await producer.send(
        topic.name,
        value=encode_value(value),
        key=key.encode("utf-8") if key is not None else None,
        headers=headers or None,
    )
    return fut


async def wait_for_kafka(
    settings: KafkaSettings,
    timeout_s: float | None = None,
    *,
    security: KafkaAuth | None = None,
) -> None:
    """Return once a metadata request succeeds; :class:`UnavailableError` after the wait.

    Services call this at start so that a missing broker gives one clear message
    instead of a stream of connection warnings. In secure mode (``security``) the
    request is made as that identity, so a refused certificate or password shows here.
    """
    deadline = time.monotonic() + (timeout_s if timeout_s is not None else settings.startup_wait_s)
    last: Exception | None = None
    while True:
        client = AIOKafkaClient(
            bootstrap_servers=settings.bootstrap_servers,
            request_timeout_ms=5000,
            **kafka_client_options(security),
        )
        try:
            await client.bootstrap()
            return
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            await client.close()
        if time.monotonic() >= deadline:
            who = f" as {security.identity} (SASL_SSL)" if security is not None else ""
            raise UnavailableError(
                f"Kafka at {settings.bootstrap_servers} did not answer a metadata request"
                f"{who} within {timeout_s or settings.startup_wait_s:.0f}s ({last}). Start it "
                "with `driftline infra up` or set DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS."
            )
        await asyncio.sleep(0.5)
