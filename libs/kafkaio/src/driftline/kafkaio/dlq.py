"""Reading and replaying the dead-letter topic (``driftline dlq show | original | replay``).

A dead letter of an oversized record keeps only its first bytes (see
:meth:`~driftline.contracts.messages.DeadLetter.of`); the whole record is read
back from its source topic, partition and offset while the topic retains it,
and checked against the sha256 the letter recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from driftline.contracts.messages import DeadLetter, DlqReason
from driftline.contracts.topics import DLQ, EVENTS, LABELS
from driftline.kafkaio.clients import make_producer, read_from_start
from driftline.security.kafka_auth import KafkaAuth, kafka_client_options
from driftline.settings import KafkaSettings

REPLAY_HEADER = "driftline-dlq-offset"
"""Header a replayed record carries: ``partition:offset`` of its dead letter."""


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter and where it sits on the DLQ topic."""

    partition: int
    offset: int
    letter: DeadLetter


def _reader(
    settings: KafkaSettings, security: KafkaAuth | None, **options: Any
) -> AIOKafkaConsumer:
    """A consumer of no group (it assigns partitions and commits nothing) that reads
    committed records only; not started."""
    return AIOKafkaConsumer(
        **kafka_client_options(security),
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-dlq-reader",
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **options,
    )


async def read_dead_letters(
    settings: KafkaSettings,
    *,
    reasons: Iterable[DlqReason] = (),
    kind: str | None = None,
    limit: int | None = None,
    security: KafkaAuth | None = None,
) -> list[StoredLetter]:
    """Dead letters currently on the DLQ (oldest first), filtered by reason and kind.

    Reads up to the end offsets at the time of the call, so it terminates on a
    live topic.  ``limit`` keeps the newest ``limit`` matches.
    """
    wanted = set(reasons)
    consumer = _reader(settings, security, auto_offset_reset="earliest")
    await consumer.start()
    try:
        end = await read_from_start(consumer, DLQ)
        out: list[StoredLetter] = []
        remaining = {tp for tp, offset in end.items() if offset > 0}
        for tp in list(remaining):
            if await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= end[tp]:
                        continue
                    letter = DeadLetter.model_validate_json(r.value)
                    if (not wanted or letter.reason in wanted) and (
                        kind is None or letter.kind == kind
                    ):
                        out.append(StoredLetter(r.partition, r.offset, letter))
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    out.sort(key=lambda s: s.letter.received_at)
    return out[-limit:] if limit else out


@dataclass(frozen=True)
class Original:
    """The whole original bytes of a dead letter, or why they cannot be had."""

    value: bytes | None
    """None when the letter is truncated and the source no longer holds the record."""
    from_source: bool = False
    """True when read back from the source topic (the letter kept only its first bytes)."""
    problem: str = ""


async def _record_at(
    settings: KafkaSettings,
    tp: TopicPartition,
    offset: int,
    fetch_bytes: int,
    security: KafkaAuth | None = None,
) -> Any:
    """The committed record at ``tp``/``offset``; :class:`LookupError` says why there is none."""
    where = f"{tp.topic}[{tp.partition}]@{offset}"
    consumer = _reader(
        settings,
        security,
        max_partition_fetch_bytes=fetch_bytes,
        fetch_max_bytes=2 * fetch_bytes,
    )
    await consumer.start()
    try:
        consumer.assign([tp])  # which makes the client fetch the topic's metadata
        for _ in range(100):
            partitions = consumer.partitions_for_topic(tp.topic)
            if partitions is not None:
                break
            await asyncio.sleep(0.1)
        if tp.partition not in (partitions or set()):
            raise LookupError(f"{tp.topic} has no partition {tp.partition}")
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not first <= offset < end:
            raise LookupError(f"{where} is not on the topic (it holds offsets {first}..{end - 1})")
        consumer.seek(tp, offset)
        while True:
            records = (await consumer.getmany(tp, timeout_ms=5000, max_records=1)).get(tp, [])
            if not records:
                raise LookupError(f"{where} could not be read within 5 s")
            if records[0].offset >= offset:
                break
    finally:
        await consumer.stop()
    if records[0].offset != offset:
        raise LookupError(f"{where} is gone (compacted, or an aborted transaction's)")
    return records[0]


async def fetch_original(
    settings: KafkaSettings, letter: DeadLetter, *, security: KafkaAuth | None = None
) -> Original:
    """The whole original of ``letter``: kept in it, or read back at its source offset.

    A truncated letter's record is read from ``source_topic[source_partition]``
    at ``source_offset`` and must match the recorded sha256; when the topic no
    longer holds it (retention) or it came over HTTP, ``value`` is None and
    ``problem`` says why.
    """
    if not letter.truncated:
        return Original(letter.original())
    topic, partition, offset = letter.source_topic, letter.source_partition, letter.source_offset
    if topic is None or partition is None or offset is None:
        return Original(
            None,
            problem=(
                f"only the first {len(letter.original()):,} of {letter.original_size or 0:,} "
                "bytes were kept, and the record came over HTTP: the caller was told it was too "
                "large and holds the rest"
            ),
        )
    if letter.original_sha256 is None:
        # Ingestion could not decode the record at all (a header that is not UTF-8 …):
        # neither can this client; kcat reads raw bytes.
        return Original(
            None,
            problem=(
                f"the Kafka client could not decode {topic}[{partition}]@{offset}; read it with "
                f"`kcat -C -b {settings.bootstrap_servers} -t {topic} -p {partition} -o {offset} "
                "-c 1`"
            ),
        )
    size = max(settings.max_message_bytes, letter.original_size or 0)
    try:
        record = await _record_at(
            settings, TopicPartition(topic, partition), offset, size, security
        )
    except LookupError as exc:
        return Original(None, problem=str(exc))
    value = record.value or b""
    if hashlib.sha256(value).hexdigest() != letter.original_sha256:
        return Original(
            None, problem=f"the record at {topic}[{partition}]@{offset} is not the letter's"
        )
    return Original(value, from_source=True)


@dataclass
class ReplayResult:
    """What :func:`replay_dead_letters` did."""

    sent: int = 0
    unavailable: list[tuple[StoredLetter, str]] = field(default_factory=list)
    """Truncated letters whose whole original could not be read back, and why."""


async def replay_dead_letters(
    settings: KafkaSettings,
    letters: Iterable[StoredLetter],
    *,
    security: KafkaAuth | None = None,
) -> ReplayResult:
    """Re-submit each letter's whole original to its raw topic.

    The records go through ingestion again, so a fixed cause (a feature set now
    registered, a constraint relaxed) lets them in; a duplicate stays a duplicate.
    A truncated letter is replayed from its source record (see
    :func:`fetch_original`); one whose source is gone is left out and listed.
    """
    result = ReplayResult()
    producer = make_producer(settings, "dlq-replay", security=security)
    await producer.start()
    try:
        futures = []
        for stored in letters:
            letter = stored.letter
            original = await fetch_original(settings, letter, security=security)
            if original.value is None:
                result.unavailable.append((stored, original.problem))
                continue
            topic = EVENTS if letter.kind == "event" else LABELS
            futures.append(
                await producer.send(
                    topic.name,
                    value=original.value,
                    key=letter.original_key.encode("utf-8") if letter.original_key else None,
                    headers=[(REPLAY_HEADER, f"{stored.partition}:{stored.offset}".encode())],
                )
            )
        for fut in futures:
            await fut
            result.sent += 1
    finally:
        await producer.stop()
    return result


async def read_dead_letter(
    settings: KafkaSettings, partition: int, offset: int, *, security: KafkaAuth | None = None
) -> StoredLetter:
    """The dead letter at ``partition:offset`` of the DLQ topic.

    Raises :class:`LookupError` naming the offsets the partition holds when there is none.
    """
    tp = TopicPartition(DLQ.name, partition)
    record = await _record_at(settings, tp, offset, settings.max_message_bytes, security)
    return StoredLetter(partition, offset, DeadLetter.model_validate_json(record.value))
