"""A returning concept answered by the registry: on the real broker and a real registry.

Concept 0 makes the first champion, concept 2 replaces it; when concept 0 comes
back, a concept-drift retrain request on ``driftline.retrain`` makes training
score the earlier champion on the first labelled examples after the onset (read
back from ``driftline.features`` / ``driftline.labels.valid``) and restore it, long
before a fresh candidate could be trained; the registry's alias history (and
``driftline models history``) shows the reason.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from river.datasets import synth

from driftline.cli.registry_views import models_history
from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel
from driftline.contracts.topics import FEATURES, LABELS_VALID, RETRAIN
from driftline.devtools.infra import free_port
from driftline.kafkaio import make_producer, send_model
from driftline.registry_client import RegistryClient
from driftline.settings import PlatformSettings
from driftline.specs import ModelSpec
from driftline.telemetry import ConsumerHealth, ServiceMetrics
from driftline.training.core import CoreConfig, TrainingCore
from driftline.training.kafka_loop import KafkaRetrainLoop
from driftline.training.label_join import Position
from driftline.training.recurring import RESTORE_REASON
from driftline.training.registry_sink import RegistrySink
from driftline.training.replay import KafkaReplay

ROOT = Path(__file__).resolve().parents[3]
SIGNING_KEY = "training-recurring-key"
BACK = 300
"""Labelled examples of the returning concept produced (a candidate would need 1,500)."""


@pytest.fixture
def settings(kafka: Any, tmp_path: Path) -> PlatformSettings:
    run = uuid.uuid4().hex[:8]
    return PlatformSettings(
        kafka={"bootstrap_servers": kafka.bootstrap_servers},
        registry={
            "grpc_port": 0,
            "admin": {"port": free_port()},
            "artifact_dir": str(tmp_path / "artifacts"),
            "signing_key": SIGNING_KEY,
        },
        training={"consumer_group": f"training-rc-{run}", "retrain_recheck_s": 1.0},
    )


class Concepts:
    """Agrawal examples of one concept after another, one second of event time apart."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.t0 = datetime.now(UTC) - timedelta(hours=2)
        self.sent = 0

    def take(self, n: int, function: int) -> list[tuple[FeatureVector, ValidLabel]]:
        out = []
        for x, y in synth.Agrawal(classification_function=function, seed=self.sent).take(n):
            at, eid = self.t0 + timedelta(seconds=self.sent), f"{self.spec.name}-e{self.sent}"
            out.append((
                FeatureVector(
                    event_id=eid, entity_id=f"c{self.sent % 50}", event_time=at,
                    featureset=self.spec.featureset, featureset_version=1, values=x,
                    produced_at=at,
                ),
                ValidLabel(event_id=eid, entity_id=f"c{self.sent % 50}", event_time=at,
                           label=y, ingested_at=at),
            ))  # fmt: skip
            self.sent += 1
        return out

    @property
    def now(self) -> datetime:
        return self.t0 + timedelta(seconds=self.sent)


async def _learn(core: TrainingCore, examples: list[tuple[FeatureVector, ValidLabel]]) -> None:
    """Feed a core directly (its snapshots go to the real registry)."""
    for i, (v, y) in enumerate(examples):
        core.on_vector(v, Position(FEATURES.name, 0, i))
        core.on_label(y, Position(LABELS_VALID.name, 0, i))


async def _until(cond: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_concept_0_2_0_restores_the_first_champion_with_the_reason_in_the_history(
    settings: PlatformSettings, registry: RegistryClient, spec: ModelSpec
) -> None:
    sink = RegistrySink(registry, SIGNING_KEY)
    concepts = Concepts(spec)
    # Concept 0: the first champion.
    first = TrainingCore(spec, sink, CoreConfig())
    await _learn(first, concepts.take(1100, function=0))
    assert (await first.snapshot()).alias == "champion"
    # Concept 2: a model of it beats the first champion on it and replaces it.
    second = TrainingCore(spec, sink, CoreConfig())
    await _learn(second, concepts.take(1100, function=2))
    promoted = await second.snapshot()
    assert promoted.alias == "champion" and promoted.version.version == 2

    # Concept 0 comes back: its examples reach the logs, the monitor asks for retraining.
    onset = concepts.now
    producer = make_producer(settings.kafka, "training-rc")
    await producer.start()
    try:
        for v, y in concepts.take(BACK, function=0):
            await send_model(producer, FEATURES, v.entity_id, v)
            await send_model(producer, LABELS_VALID, y.entity_id, y)
        request = RetrainRequest(
            request_id=f"retrain-{spec.name}-{uuid.uuid4().hex[:8]}", model_name=spec.name,
            reason="concept drift (error_rise: 31.2 > 14)", since_event_time=onset,
            requested_at=datetime.now(UTC),
        )  # fmt: skip
        await (await send_model(producer, RETRAIN, spec.name, request))
    finally:
        await producer.stop()

    core = TrainingCore(spec, sink, CoreConfig())
    metrics = ServiceMetrics("training")
    health = ConsumerHealth(metrics.registry, stall_after_s=60)
    loop = KafkaRetrainLoop([core], settings, metrics, KafkaReplay(settings.kafka), health)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await _until(lambda: bool(core.restored), "the restoration")
    finally:
        stop.set()
        await task

    # Restored without a new version: the first champion serves again, for this request.
    assert (await registry.get(spec.name, alias="champion")).version == 1
    assert [v.version for v in await registry.list_versions(spec.name)] == [1, 2]
    history = await registry.history(spec.name, alias="champion")
    assert [c.version for c in history] == [1, 2, 1]
    restore = history[-1]
    assert restore.previous_version == 2
    assert restore.reason.startswith(f"{RESTORE_REASON}: v1 accuracy 0.9")
    assert "vs champion v2" in restore.reason
    assert restore.trigger_id == request.request_id
    assert restore.actor == "driftline-training"
    # The request still waits for its fresh candidate (held, not committed).
    assert request.request_id in core.pending_retrains
    assert core.retrains.handled == 0
    rows = await asyncio.to_thread(models_history, registry.target, spec.name, "champion")
    assert rows[-1]["to"] == "1" and str(rows[-1]["reason"]).startswith(RESTORE_REASON)
    assert rows[-1]["trigger"] == request.request_id
