"""Training against the harness's real Kafka broker and a real registry (in-process, gRPC).

Feature vectors and delayed labels are produced to the topics; the training
loops run in-process; candidates land in the real registry service.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from river import stream
from river.datasets import synth

from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel
from driftline.contracts.topics import FEATURES, LABELS_VALID, RETRAIN
from driftline.infra import free_port
from driftline.kafkaio import make_producer, provision_topics, send_model
from driftline.registry.service import RegistryService
from driftline.registry_client import RegistryClient
from driftline.settings import PlatformSettings
from driftline.specs import ModelSpec, load_model_spec
from driftline.telemetry import ServiceMetrics
from driftline.training.core import CoreConfig, TrainingCore
from driftline.training.kafka_loop import KafkaRetrainLoop, KafkaTrainingLoop
from driftline.training.registry_sink import RegistrySink
from driftline.training.replay import KafkaReplay

ROOT = Path(__file__).resolve().parents[3]
SIGNING_KEY = "training-integration-key"
N, DELAY = 2500, 20


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
        training={"consumer_group": f"training-it-{run}", "snapshot_every": 1000},
    )


@pytest.fixture
async def registry(settings: PlatformSettings) -> AsyncIterator[RegistryClient]:
    await provision_topics(settings.kafka)
    service = RegistryService(settings)
    await service.start()
    client = RegistryClient(f"127.0.0.1:{service.grpc_port}", timeout_s=30)
    try:
        yield client
    finally:
        await client.close()
        await service.stop()


@pytest.fixture
def spec() -> ModelSpec:
    """The example spec, under a model and feature-set name no other test uses."""
    base = load_model_spec(ROOT / "examples" / "models" / "loans.yaml")
    run = uuid.uuid4().hex[:8]
    return ModelSpec.model_validate(
        base.model_dump() | {"name": f"loans-{run}", "featureset": f"loans_{run}"}
    )


async def _produce_stream(
    settings: PlatformSettings, spec: ModelSpec, *, paced: bool = False
) -> datetime:
    """Agrawal vectors and their labels DELAY events later, in River's arrival order."""
    t0 = datetime.now(UTC) - timedelta(hours=1)
    producer = make_producer(settings.kafka, "training-it")
    await producer.start()
    try:
        for i, x, y in stream.simulate_qa(synth.Agrawal(seed=9).take(N), None, DELAY):
            at = t0 + timedelta(seconds=i)
            entity = f"c{i % 50}"
            if y is None:
                value: Any = FeatureVector(
                    event_id=f"{spec.name}-e{i}", entity_id=entity, event_time=at,
                    featureset=spec.featureset, featureset_version=1, values=x, produced_at=at,
                )  # fmt: skip
                fut = await send_model(producer, FEATURES, entity, value)
            else:
                value = ValidLabel(
                    event_id=f"{spec.name}-e{i}", entity_id=entity, event_time=at, label=y,
                    ingested_at=at,
                )  # fmt: skip
                fut = await send_model(producer, LABELS_VALID, entity, value)
            if paced:
                await fut
        await producer.flush()
    finally:
        await producer.stop()
    return t0


async def _until(cond: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_online_training_registers_candidates_with_metrics_and_lineage(
    settings: PlatformSettings, registry: RegistryClient, spec: ModelSpec
) -> None:
    core = TrainingCore(spec, RegistrySink(registry, SIGNING_KEY), CoreConfig(snapshot_every=1000))
    loop = KafkaTrainingLoop([core], settings, ServiceMetrics("training"))
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        # Live traffic: the loop predicts each vector as it arrives, like serving would
        # (a backlog read all at once would be predicted by a model that has no labels yet).
        await asyncio.wait_for(loop.assigned.wait(), 60)
        await _produce_stream(settings, spec, paced=True)
        await _until(lambda: len(core.candidates) >= 2, "two snapshots")
    finally:
        stop.set()
        await task
    versions = await registry.list_versions(spec.name)
    assert [v.version for v in versions][:2] == [1, 2]
    first = versions[0]
    # Snapshots are taken at batch boundaries once 1000 more examples were learned.
    assert first.metrics["examples"] >= 1000
    assert 0.5 < first.metrics["accuracy"] <= 1.0
    assert first.lineage is not None
    assert first.lineage.featureset == spec.featureset
    assert {r.topic for r in first.lineage.offsets} == {FEATURES.name, LABELS_VALID.name}
    assert first.lineage.examples == first.metrics["examples"]
    assert first.lineage.event_time_from is not None
    second = versions[1]
    assert second.lineage is not None and second.lineage.parent_version == 1
    assert second.lineage.examples >= first.lineage.examples + 1000
    champion = await registry.get(spec.name, alias="champion")
    assert champion.version in (1, 2)
    # The registered artifact is a model serving-side code can verify and load.
    model, _ = await registry.load_model(
        spec.name, version=versions[-1].version, signing_key=SIGNING_KEY
    )
    fresh = list(synth.Agrawal(seed=123).take(500))
    hits = sum(model.predict_one(spec.select(x)) == y for x, y in fresh)
    assert hits / len(fresh) > 0.75  # a trained tree (>= 2000 examples), not a blank or a coin


async def test_a_retrain_request_makes_exactly_one_candidate_even_when_replayed(
    settings: PlatformSettings, registry: RegistryClient, spec: ModelSpec
) -> None:
    t0 = await _produce_stream(settings, spec)
    request = RetrainRequest(
        request_id=f"rr-{uuid.uuid4().hex[:8]}", model_name=spec.name, reason="drift",
        since_event_time=t0 + timedelta(seconds=500), requested_at=datetime.now(UTC),
    )  # fmt: skip
    producer = make_producer(settings.kafka, "training-it-retrain")
    await producer.start()
    try:
        await (await send_model(producer, RETRAIN, spec.name, request))
    finally:
        await producer.stop()

    async def run_retrain_loop(core: TrainingCore, done: Callable[[], bool]) -> None:
        loop = KafkaRetrainLoop(
            [core], settings, ServiceMetrics("training"), KafkaReplay(settings.kafka)
        )
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        try:
            await _until(done, "the retrain request")
        finally:
            stop.set()
            await task

    sink = RegistrySink(registry, SIGNING_KEY)
    core = TrainingCore(spec, sink)
    await run_retrain_loop(core, lambda: core.retrains.handled + core.retrains.skipped >= 1)
    assert core.retrains.handled == 1
    versions = await registry.list_versions(spec.name)
    assert len(versions) == 1
    made = versions[0]
    assert made.lineage is not None and made.lineage.trigger_id == request.request_id
    assert made.lineage.event_time_from is not None
    assert made.lineage.event_time_from >= request.since_event_time  # type: ignore[operator]
    assert made.metrics["eval_examples"] >= spec.promotion.min_eval_examples
    assert made.metrics["accuracy"] > 0.8

    # The same request delivered again, to a fresh process (new core, same group).
    producer = make_producer(settings.kafka, "training-it-retrain")
    await producer.start()
    try:
        await (await send_model(producer, RETRAIN, spec.name, request))
    finally:
        await producer.stop()
    restarted = TrainingCore(spec, sink)
    await run_retrain_loop(restarted, lambda: restarted.retrains.duplicates == 1)
    assert [v.version for v in await registry.list_versions(spec.name)] == [1]
