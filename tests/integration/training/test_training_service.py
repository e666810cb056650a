"""Training against the harness's real Kafka broker and a real registry (in-process, gRPC).

Feature vectors and delayed labels are produced to the topics; the training
loops run in-process, or (fed poison records) as the service process; candidates
land in the real registry service.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from river import stream
from river.datasets import synth

from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel
from driftline.contracts.topics import FEATURES, LABELS_VALID, RETRAIN
from driftline.devtools.infra import free_port
from driftline.kafkaio import make_producer, send_model
from driftline.registry_client import RegistryClient
from driftline.settings import PlatformSettings
from driftline.specs import ModelSpec
from driftline.telemetry import ConsumerHealth, ServiceMetrics
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
    metrics = ServiceMetrics("training")
    health = ConsumerHealth(metrics.registry, stall_after_s=60)
    loop = KafkaTrainingLoop([core], settings, metrics, health)
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
        metrics = ServiceMetrics("training")
        health = ConsumerHealth(metrics.registry, stall_after_s=60)
        loop = KafkaRetrainLoop([core], settings, metrics, KafkaReplay(settings.kafka), health)
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


# -- the service process, fed poison -----------------------------------------------------


class TrainingProcess:
    """``python -m driftline.training`` on free ports, against the test's broker and registry."""

    def __init__(self, settings: PlatformSettings, registry_target: str, tmp: Path,
                 spec: ModelSpec, *, instance_id: str = "0",
                 extra_env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.instance_id = instance_id
        tmp = tmp / f"training-{instance_id}"
        models, featuresets = tmp / "models", tmp / "featuresets"
        models.mkdir(parents=True, exist_ok=True)
        featuresets.mkdir(exist_ok=True)
        # The demo's model and feature set under this test's names (no other test's records).
        model_text = (ROOT / "examples" / "models" / "loans.yaml").read_text()
        fs_text = (ROOT / "examples" / "featuresets" / "loans.yaml").read_text()
        assert "\nname: loans\nfeatureset: loans\n" in model_text
        assert "\nname: loans\n" in fs_text and "label: {type: binary}" in fs_text
        (models / "loans.yaml").write_text(model_text.replace(
            "\nname: loans\nfeatureset: loans\n",
            f"\nname: {spec.name}\nfeatureset: {spec.featureset}\n",
        ))  # fmt: skip
        (featuresets / "loans.yaml").write_text(
            fs_text.replace("\nname: loans\n", f"\nname: {spec.featureset}\n")
        )
        self.admin = f"http://127.0.0.1:{free_port()}"
        self.log = tmp / "training.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
        env.update(
            DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
            DRIFTLINE_TRAINING__MODELS_DIR=str(models),
            DRIFTLINE_TRAINING__FEATURESETS_DIR=str(featuresets),
            DRIFTLINE_TRAINING__REGISTRY_TARGET=registry_target,
            DRIFTLINE_REGISTRY__SIGNING_KEY=SIGNING_KEY,
            DRIFTLINE_TRAINING__ADMIN__PORT=self.admin.rsplit(":", 1)[1],
            DRIFTLINE_TRAINING__CONSUMER_GROUP=settings.training.consumer_group,
            DRIFTLINE_TRAINING__SNAPSHOT_EVERY="1000",
            DRIFTLINE_TRAINING__BATCH_SIZE="200",
            DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
            DRIFTLINE_TRAINING__INSTANCE_ID=instance_id,
        )
        env.update(extra_env or {})
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.training"], env=env, cwd=ROOT, stdout=out,
            stderr=out,
        )  # fmt: skip

    def alive(self) -> bool:
        assert self.proc.poll() is None, f"training exited:\n{self.log_text()[-4000:]}"
        return True

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def get(self, path: str) -> httpx.Response | None:
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                return await http.get(f"{self.admin}{path}")
        except httpx.HTTPError:
            return None

    async def sample(self, name: str, **labels: str) -> float | None:
        """The value of one sample on ``/metrics`` (None while it does not exist)."""
        response = await self.get("/metrics")
        if response is None:
            return None
        for family in text_string_to_metric_families(response.text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode


def _kcat(bootstrap: str, topic: str, key: str, lines: list[bytes], partition: int = -1) -> None:
    """Produce ``lines`` (one record each, in order) with kcat: a client outside Driftline."""
    argv = ["kcat", "-b", bootstrap, "-P", "-t", topic, "-k", key]
    if partition >= 0:
        argv += ["-p", str(partition)]
    subprocess.run(argv, input=b"\n".join(lines) + b"\n", check=True, timeout=60)


async def test_the_service_skips_a_maybe_label_and_impossible_retrain_requests_and_goes_on(
    settings: PlatformSettings, registry: RegistryClient, spec: ModelSpec, tmp_path: Path
) -> None:
    bootstrap = settings.kafka.bootstrap_servers
    service = TrainingProcess(settings, registry.target, tmp_path, spec)
    skipped = "driftline_records_skipped_total"
    try:
        deadline = asyncio.get_running_loop().time() + 90
        while (r := await service.get("/readyz")) is None or r.status_code != 200:
            service.alive()
            assert asyncio.get_running_loop().time() < deadline, service.log_text()[-4000:]
            await asyncio.sleep(0.3)
        pid = service.proc.pid

        # The Agrawal stream, with the label of event 700 replaced by "maybe", written
        # by kcat in its place (ingestion let such a label through before issue 14).
        t0 = datetime.now(UTC) - timedelta(hours=1)
        producer = make_producer(settings.kafka, "training-it-poison")
        await producer.start()
        maybe_id = f"{spec.name}-e700"
        try:
            for i, x, y in stream.simulate_qa(synth.Agrawal(seed=9).take(3000), None, DELAY):
                at, entity = t0 + timedelta(seconds=i), f"c{i % 50}"
                if y is None:
                    vector = FeatureVector(
                        event_id=f"{spec.name}-e{i}", entity_id=entity, event_time=at,
                        featureset=spec.featureset, featureset_version=1, values=x,
                        produced_at=at,
                    )  # fmt: skip
                    await send_model(producer, FEATURES, entity, vector)
                    continue
                label = ValidLabel(
                    event_id=f"{spec.name}-e{i}", entity_id=entity, event_time=at,
                    label=y, ingested_at=at,
                )  # fmt: skip
                if label.event_id != maybe_id:
                    await send_model(producer, LABELS_VALID, entity, label)
                    continue
                await producer.flush()
                maybe = label.model_dump(mode="json") | {"label": "maybe"}
                line = json.dumps(maybe).encode()
                await asyncio.to_thread(_kcat, bootstrap, LABELS_VALID.name, entity, [line])
            await producer.flush()
        finally:
            await producer.stop()

        model = {"model": spec.name}

        async def learned() -> float | None:
            return await service.sample("driftline_training_examples_learned_total", **model)

        deadline = asyncio.get_running_loop().time() + 180
        while (await learned() or 0) < 2999:
            service.alive()
            assert asyncio.get_running_loop().time() < deadline, service.log_text()[-4000:]
            await asyncio.sleep(0.5)
        # Every example but the one labelled "maybe" was learned, and it was counted.
        assert await learned() == 2999
        label_type = {"topic": LABELS_VALID.name, "reason": "label_type"}
        assert await service.sample(skipped, **label_type) == 1
        assert await service.sample(
            "driftline_training_examples_skipped_total", **model, reason="label_type"
        ) == 1  # fmt: skip
        assert f"(event {maybe_id}): label_type: model {spec.name}: label: 'maybe'" in (
            service.log_text()
        )
        # Versions kept being registered, past the "maybe" (learned ~700th): one after
        # 1,000 examples, one after 2,000.
        deadline = asyncio.get_running_loop().time() + 60
        while len(versions := await registry.list_versions(spec.name)) < 2:
            service.alive()
            assert asyncio.get_running_loop().time() < deadline, service.log_text()[-4000:]
            await asyncio.sleep(0.5)
        assert versions[-1].lineage is not None and versions[-1].lineage.examples >= 2000

        # driftline.retrain: garbage, a request naming a partition that does not exist,
        # then a request that can be served, all on partition 0 in that order.
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            tp = TopicPartition(RETRAIN.name, 0)
            first = (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()
        run = uuid.uuid4().hex[:8]
        impossible = RetrainRequest(
            request_id=f"rr-impossible-{run}", model_name=spec.name, reason="drift",
            since_offsets={f"{FEATURES.name}:99": 0}, requested_at=datetime.now(UTC),
        )  # fmt: skip
        good = RetrainRequest(
            request_id=f"rr-good-{run}", model_name=spec.name, reason="drift",
            since_event_time=t0 + timedelta(seconds=500), requested_at=datetime.now(UTC),
        )  # fmt: skip
        await asyncio.to_thread(
            _kcat, bootstrap, RETRAIN.name, spec.name,
            [b"{not a retrain request", impossible.model_dump_json().encode(),
             good.model_dump_json().encode()],
            partition=0,
        )  # fmt: skip

        async def served() -> bool:
            service.alive()
            return await _made_for(registry, spec.name, good.request_id)

        deadline = asyncio.get_running_loop().time() + 180
        while not await served():
            assert asyncio.get_running_loop().time() < deadline, service.log_text()[-4000:]
            await asyncio.sleep(0.5)
        text = service.log_text()
        assert f"skipped the record at {RETRAIN.name}[0]@{first}: unreadable" in text
        assert (
            f"skipped the record at {RETRAIN.name}[0]@{first + 1} (event {impossible.request_id}): "
            f"invalid_request" in text
        )
        assert "names a partition retraining does not replay" in text
        assert (await service.sample(skipped, topic=RETRAIN.name, reason="unreadable") or 0) >= 1
        assert (
            await service.sample(skipped, topic=RETRAIN.name, reason="invalid_request") or 0
        ) >= 1
        # Refused once, never retried.
        assert len([line for line in text.splitlines() if impossible.request_id in line]) == 1
        assert service.proc.pid == pid and service.alive()
    finally:
        # In a thread: the registry serves from this test's event loop, and the trainer
        # told to stop first finishes the registration it may have under way.
        code = await asyncio.to_thread(service.stop)
    assert code == 0, service.log_text()[-4000:]


async def _made_for(registry: RegistryClient, name: str, trigger_id: str) -> bool:
    """Whether ``name`` has a version made for ``trigger_id``."""
    return any(
        v.lineage is not None and v.lineage.trigger_id == trigger_id
        for v in await registry.list_versions(name)
    )
