"""The retrain transport holds a request that must wait, and never commits past it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from river.datasets import synth

from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel, utcnow
from driftline.contracts.topics import RETRAIN
from driftline.settings import PlatformSettings
from driftline.specs import load_model_spec
from driftline.telemetry import ConsumerHealth, ServiceMetrics
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
    metrics = ServiceMetrics("training")
    health = ConsumerHealth(metrics.registry, stall_after_s=60)
    loop = KafkaRetrainLoop([core], settings, metrics, replay, health)

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


def _health(stall_after_s: float = 60) -> ConsumerHealth:
    return ConsumerHealth(ServiceMetrics("training").registry, stall_after_s=stall_after_s)


def _request(rid: str, model: str = "loans", **fields: Any) -> bytes:
    values: dict[str, Any] = {
        "request_id": rid, "model_name": model, "reason": "drift", "requested_at": utcnow(),
    }  # fmt: skip
    return RetrainRequest(**(values | fields)).model_dump_json().encode()


def _examples(
    make_vector: Callable[..., FeatureVector], make_label: Callable[..., ValidLabel]
) -> Any:
    return [
        JoinedExample(make_vector(i, values=x), make_label(i, y=y), Prediction(), None, None)
        for i, (x, y) in enumerate(synth.Agrawal(seed=6).take(2000))
    ]


async def test_requests_that_can_never_be_served_are_dropped_and_committed(
    make_vector: Callable[..., FeatureVector], make_label: Callable[..., ValidLabel]
) -> None:
    spec = load_model_spec(ROOT / "examples" / "models" / "loans.yaml")
    examples = _examples(make_vector, make_label)
    broken_since = examples[7].event_time

    async def replay(plan: ReplayPlan) -> list[JoinedExample[Any]]:
        if plan.since_event_time == broken_since:
            raise TypeError("a bug the request exercises")
        return list(examples)

    sink = InMemorySink()
    core = TrainingCore(spec, sink)
    health = _health()
    loop = KafkaRetrainLoop([core], PlatformSettings(), ServiceMetrics("training"), replay, health)
    far = utcnow() + timedelta(days=365)
    consumer = ScriptedConsumer(
        [
            Record(0, b"\x00garbage"),
            Record(1, _request("rr-partition", since_offsets={"driftline.features:99": 0})),
            Record(2, _request("rr-topic", since_offsets={"driftline.events:0": 0})),
            Record(3, _request("rr-future", since_event_time=far)),
            Record(4, _request("rr-asked-in-3026", requested_at=far)),
            Record(5, _request("rr-bug", since_event_time=broken_since)),
            Record(6, _request("rr-nobody", model="no-such-model")),
            Record(7, _request("rr-ok", since_event_time=examples[0].event_time)),
        ]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.consume(consumer, stop))
    try:
        await _until(lambda: bool(consumer.commits) and consumer.commits[-1][TP] == 8)
    finally:
        stop.set()
        await task
    # Each impossible request was dropped once (never retried) and the good one served.
    assert loop.held == []
    [stored] = sink.versions["loans"]
    assert stored.version.lineage is not None and stored.version.lineage.trigger_id == "rr-ok"
    assert health.skipped(RETRAIN.name, "unreadable") == 1
    assert health.skipped(RETRAIN.name, "invalid_request") == 4
    assert health.skipped(RETRAIN.name, "processing_error") == 1
    assert health.skipped(RETRAIN.name, "unknown_model") == 1
    assert health.stalled() == []


async def test_a_request_failing_on_the_broker_is_retried_and_reported_as_a_stall(
    make_vector: Callable[..., FeatureVector], make_label: Callable[..., ValidLabel]
) -> None:
    spec = load_model_spec(ROOT / "examples" / "models" / "loans.yaml")
    examples = _examples(make_vector, make_label)
    broker_up = asyncio.Event()
    failures = 0

    async def replay(plan: ReplayPlan) -> list[JoinedExample[Any]]:
        nonlocal failures
        if not broker_up.is_set():
            failures += 1
            raise KafkaConnectionError("broker unreachable")
        return list(examples)

    sink = InMemorySink()
    core = TrainingCore(spec, sink)
    health = _health(stall_after_s=0.0)
    loop = KafkaRetrainLoop([core], PlatformSettings(), ServiceMetrics("training"), replay, health)
    consumer = ScriptedConsumer(
        [Record(0, _request("rr-later", since_event_time=examples[0].event_time))]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.consume(consumer, stop))
    try:
        await _until(lambda: failures >= 2)
        # Kept (not committed, not dropped) and visible as a stall of its partition.
        assert [h.request.request_id for h in loop.held] == ["rr-later"]
        assert health.stalled() == [(RETRAIN.name, 0, 0)]
        assert all(c[TP] == 0 for c in consumer.commits)
        broker_up.set()
        await _until(lambda: bool(consumer.commits) and consumer.commits[-1][TP] == 1)
    finally:
        stop.set()
        await task
    assert [s.version.lineage.trigger_id for s in sink.versions["loans"]] == ["rr-later"]  # type: ignore[union-attr]
    assert health.stalled() == []
    assert health.skipped(RETRAIN.name, "invalid_request") == 0
