"""The retrain transport holds a request that must wait, and never commits past it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from river.datasets import synth

from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel, utcnow
from driftline.contracts.topics import RETRAIN
from driftline.settings import PlatformSettings
from driftline.specs import load_model_spec
from driftline.telemetry import ServiceMetrics
from driftline.training.candidates import InMemorySink
from driftline.training.core import TrainingCore
from driftline.training.kafka_loop import KafkaRetrainLoop
from driftline.training.label_join import JoinedExample
from driftline.training.learner import Prediction
from driftline.training.retrain import ReplayPlan

ROOT = Path(__file__).resolve().parents[3]
TP = TopicPartition(RETRAIN.name, 0)


@dataclass
class Record:
    offset: int
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class ScriptedConsumer:
    """Hands out one batch of records, then nothing; remembers every commit."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        batch, self.records = self.records, []
        if not batch:
            await asyncio.sleep(0.01)
            return {}
        return {TP: batch}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):
        while not check():
            await asyncio.sleep(0.01)


async def test_a_waiting_request_stays_uncommitted_until_served_once(
    make_vector: Callable[..., FeatureVector], make_label: Callable[..., ValidLabel]
) -> None:
    spec = load_model_spec(ROOT / "examples" / "models" / "loans.yaml")
    examples = [
        JoinedExample(make_vector(i, values=x), make_label(i, y=y), Prediction(), None, None)
        for i, (x, y) in enumerate(synth.Agrawal(seed=6).take(2000))
    ]
    available = examples[:400]
    replays: list[ReplayPlan] = []

    async def replay(plan: ReplayPlan) -> list[JoinedExample[Any]]:
        replays.append(plan)
        return list(available)

    sink = InMemorySink()
    core = TrainingCore(spec, sink)
    settings = PlatformSettings(training={"retrain_recheck_s": 0.05})
    loop = KafkaRetrainLoop([core], settings, ServiceMetrics("training"), replay)

    def request(rid: str, model: str) -> bytes:
        return RetrainRequest(
            request_id=rid, model_name=model, reason="drift",
            since_event_time=examples[0].event_time, requested_at=utcnow(),
        ).model_dump_json().encode()  # fmt: skip

    consumer = ScriptedConsumer(
        [
            Record(0, request("rr-wait", "loans")),
            Record(1, b"{not json"),
            Record(2, request("rr-other", "another-model")),
        ]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.consume(consumer, stop))
    try:
        await _until(lambda: len(replays) >= 3)  # tried again and again, still short
        assert [h.request.request_id for h in loop.held] == ["rr-wait"]
        assert core.pending_retrains.keys() == {"rr-wait"}
        assert sink.versions == {}
        # Nothing at or past the waiting request is committed: a restart reads it again.
        assert consumer.commits and all(c[TP] == 0 for c in consumer.commits)

        available = examples  # the labels after the onset have come
        await _until(lambda: core.retrains.handled == 1)
        await _until(lambda: bool(consumer.commits) and consumer.commits[-1][TP] == 3)
    finally:
        stop.set()
        await task
    assert loop.held == []
    [stored] = sink.versions["loans"]
    assert stored.version.lineage is not None and stored.version.lineage.trigger_id == "rr-wait"
    assert core.retrains.deferred == 1 and core.retrains.duplicates == 0
