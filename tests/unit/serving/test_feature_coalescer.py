"""The read coalescer on its own, over an in-memory store: no gRPC involved."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from driftline.contracts.errors import DeadlineExceededError
from driftline.serving.feature_coalescer import ReadCoalescer, TraceContext
from driftline.serving.feature_source import OnlineValue

pytestmark = pytest.mark.unit


class Store:
    """Answers ``x`` = the entity id's number, after ``delay_s``; records each read."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.reads: list[tuple[list[str], float]] = []

    async def read(
        self,
        featureset: str,
        entity_ids: Sequence[str],
        feature_names: Sequence[str],
        timeout_s: float,
        trace: TraceContext,
    ) -> list[dict[str, OnlineValue]]:
        self.reads.append((list(entity_ids), timeout_s))
        await asyncio.sleep(self.delay_s)
        return [{"x": OnlineValue(int(e[1:]), "PRESENT", 0)} for e in entity_ids]


async def test_reads_arriving_while_one_is_in_flight_share_the_next_read() -> None:
    store = Store()
    reads = ReadCoalescer(store.read, "mem")
    first = asyncio.ensure_future(reads.read("s", ["e0"], ["x"], 5.0))
    await asyncio.sleep(0.01)
    rest = await asyncio.gather(
        reads.read("s", ["e1", "e2"], ["x"], 5.0),
        reads.read("s", ["e3"], ["x"], 1.0),
        reads.read("s", ["e4"], ["x"], 5.0),
    )
    assert [[r["x"].value for r in rows] for rows in [await first, *rest]] == [
        [0],
        [1, 2],
        [3],
        [4],
    ]
    assert [ids for ids, _ in store.reads] == [["e0"], ["e1", "e2", "e3", "e4"]]
    # The shared read has the earliest deadline of its callers.
    assert store.reads[1][1] <= 1.0


async def test_a_full_batch_goes_out_without_waiting() -> None:
    store = Store()
    reads = ReadCoalescer(store.read, "mem", max_coalesced=2)
    first = asyncio.ensure_future(reads.read("s", ["e0"], ["x"], 5.0))
    await asyncio.sleep(0.01)
    await asyncio.gather(*(reads.read("s", [f"e{i}"], ["x"], 5.0) for i in range(1, 6)))
    await first
    assert [ids for ids, _ in store.reads] == [["e0"], ["e1", "e2"], ["e3", "e4"], ["e5"]]


async def test_queued_reads_whose_time_ran_out_fail_with_a_deadline_error() -> None:
    store = Store(delay_s=0.2)
    reads = ReadCoalescer(store.read, "mem")
    first = asyncio.ensure_future(reads.read("s", ["e0"], ["x"], 5.0))
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceededError, match="no time was left to read features from mem"):
        await reads.read("s", ["e1"], ["x"], 0.05)
    await first
    assert [ids for ids, _ in store.reads] == [["e0"]]


async def test_one_caller_giving_up_does_not_cancel_the_read_others_wait_for() -> None:
    store = Store()
    reads = ReadCoalescer(store.read, "mem")
    first = asyncio.ensure_future(reads.read("s", ["e0"], ["x"], 5.0))
    await asyncio.sleep(0.01)
    quitter = asyncio.ensure_future(reads.read("s", ["e1"], ["x"], 5.0))
    stayer = asyncio.ensure_future(reads.read("s", ["e2"], ["x"], 5.0))
    await asyncio.sleep(0.01)
    quitter.cancel()
    [row] = await stayer
    assert row["x"].value == 2
    await first
