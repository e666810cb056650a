"""Reading and replaying the dead-letter topic (``driftline dlq show | replay``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from driftline.contracts.messages import DeadLetter, DlqReason
from driftline.contracts.topics import DLQ, EVENTS, LABELS
from driftline.kafkaio.clients import make_producer
from driftline.settings import KafkaSettings

REPLAY_HEADER = "driftline-dlq-offset"
"""Header a replayed record carries: ``partition:offset`` of its dead letter."""


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter and where it sits on the DLQ topic."""

    partition: int
    offset: int
    letter: DeadLetter


async def read_dead_letters(
    settings: KafkaSettings,
    *,
    reasons: Iterable[DlqReason] = (),
    kind: str | None = None,
    limit: int | None = None,
) -> list[StoredLetter]:
    """Dead letters currently on the DLQ (oldest first), filtered by reason and kind.

    Reads up to the end offsets at the time of the call, so it terminates on a
    live topic.  ``limit`` keeps the newest ``limit`` matches.
    """
    wanted = set(reasons)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-dlq-reader",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        # The declaration is the contract for the partition count.
        tps = [TopicPartition(DLQ.name, p) for p in range(DLQ.partitions)]
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, begin[tp])
        out: list[StoredLetter] = []
        remaining = {tp for tp in tps if end[tp] > 0}
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


async def replay_dead_letters(settings: KafkaSettings, letters: Iterable[StoredLetter]) -> int:
    """Re-submit each letter's original bytes to its raw topic; returns how many were sent.

    The records go through ingestion again, so a fixed cause (a feature set now
    registered, a constraint relaxed) lets them in; a duplicate stays a duplicate.
    """
    producer = make_producer(settings, "dlq-replay")
    await producer.start()
    sent = 0
    try:
        futures = []
        for stored in letters:
            letter = stored.letter
            topic = EVENTS if letter.kind == "event" else LABELS
            futures.append(
                await producer.send(
                    topic.name,
                    value=letter.original(),
                    key=letter.original_key.encode("utf-8") if letter.original_key else None,
                    headers=[(REPLAY_HEADER, f"{stored.partition}:{stored.offset}".encode())],
                )
            )
        for fut in futures:
            await fut
            sent += 1
    finally:
        await producer.stop()
    return sent
