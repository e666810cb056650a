"""Producing many records at once through aiokafka's batch API.

``AIOKafkaProducer.send`` costs ~10 µs of Python per record (partitioning, a
future, the accumulator); appending to a :class:`BatchBuilder` per partition and
handing each full batch over with ``send_batch`` costs a fraction of that, which
matters at thousands of records per second on one core.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

__all__ = ["OutRecord", "RecordBatch", "batch_records", "send_batched"]

OutRecord = tuple[bytes | None, bytes, Sequence[tuple[str, bytes]] | None, int | None]
"""``(key, value, headers, partition)``; a None partition means "by key", as ``send`` does."""

_partitioner = DefaultPartitioner()


@dataclass(slots=True)
class RecordBatch:
    """One producer batch for one partition, and which input records it holds."""

    partition: int
    builder: Any
    """aiokafka's ``BatchBuilder``, ready for ``producer.send_batch``."""
    indices: list[int] = field(default_factory=list)
    """Positions of its records in the input, in order."""


async def batch_records(
    producer: AIOKafkaProducer,
    topic: str,
    records: Iterable[OutRecord],
    partitions: Sequence[int] | None = None,
) -> list[RecordBatch]:
    """Pack ``records`` into per-partition batches (a partition's batches in order).

    Records without a partition go where ``producer.send`` would put them
    (murmur2 of the key over ``partitions``, the topic's partitions by default),
    so mixing the two keeps each key on one partition.  Raises a
    :class:`~aiokafka.errors.KafkaError` when the topic's partitions are unknown.
    """
    batches: list[RecordBatch] = []
    open_batches: dict[int, RecordBatch] = {}
    for index, (key, value, headers, partition) in enumerate(records):
        extra = list(headers or ())
        if partition is None:
            if partitions is None:
                partitions = sorted(await producer.partitions_for(topic))
            partition = _partitioner(key, partitions, partitions)
        batch = open_batches.get(partition)
        if (
            batch is None
            or batch.builder.append(key=key, value=value, timestamp=None, headers=extra) is None
        ):
            # New, or full: start another (a fresh batch always takes one record).
            batch = open_batches[partition] = RecordBatch(partition, producer.create_batch())
            batches.append(batch)
            batch.builder.append(key=key, value=value, timestamp=None, headers=extra)
        batch.indices.append(index)
    return batches


async def send_batched(
    producer: AIOKafkaProducer, topic: str, records: Iterable[OutRecord]
) -> list[asyncio.Future[Any]]:
    """Hand ``records`` to the producer in per-partition batches; the batches' delivery futures.

    Raises what :func:`batch_records` and ``send_batch`` raise (a
    :class:`~aiokafka.errors.KafkaError`).
    """
    return [
        await producer.send_batch(b.builder, topic, partition=b.partition)
        for b in await batch_records(producer, topic, records)
    ]
