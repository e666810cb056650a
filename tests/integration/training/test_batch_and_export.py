"""Batch models and the point-in-time export against the harness's real Kafka broker and a
real registry (in-process, over gRPC).

* the export (Python and ``driftline features export``) equals, row for row, the window
  training joins for a retrain request with the same ``since``;
* a batch model is fitted on schedule from the replayed window, registered as a signed
  ``sklearn-pickle`` version the scikit-learn runtime loads, and a retrain request refits it;
* a retrain request for a model training cannot retrain is recorded on the model.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from river import stream
from river.datasets import synth

from driftline.artifacts import verify
from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel
from driftline.contracts.topics import FEATURES, LABELS_VALID, RETRAIN
from driftline.devtools.infra import free_port
from driftline.kafkaio import make_producer, provision_topics, send_model
from driftline.model_runtimes import FeatureBatch, load_runtime
from driftline.offline import read_training_set, write_table
from driftline.registry_client import RegistryClient
from driftline.settings import PlatformSettings
from driftline.specs import ModelSpec, load_featureset, load_featuresets, load_model_spec
from driftline.telemetry import ConsumerHealth, ServiceMetrics
from driftline.training.batch import signature_of
from driftline.training.candidates import InMemorySink
from driftline.training.core import CoreConfig, RetrainStatus, TrainingCore
from driftline.training.kafka_loop import KafkaRetrainLoop, KafkaTrainingLoop
from driftline.training.registry_sink import RegistrySink
from driftline.training.replay import KafkaReplay

ROOT = Path(__file__).resolve().parents[3]
SIGNING_KEY = "batch-integration-key"
N, DELAY = 3500, 20


@pytest.fixture
def run() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def spec(run: str) -> ModelSpec:
    """The batch example spec under a model and feature-set name no other test uses."""
    base = load_model_spec(ROOT / "examples" / "models" / "batch" / "loans-gbm.yaml")
    return ModelSpec.model_validate(
        base.model_dump() | {"name": f"gbm-{run}", "featureset": f"loans_{run}"}
    )


@pytest.fixture
def featuresets(tmp_path: Path, spec: ModelSpec) -> Path:
    """The loans feature set under this test's name (the registry checks versions against it)."""
    directory = tmp_path / "featuresets"
    directory.mkdir()
    text = (ROOT / "examples" / "featuresets" / "loans.yaml").read_text()
    assert "\nname: loans\n" in text
    (directory / "loans.yaml").write_text(text.replace("\nname: loans\n",
                                                       f"\nname: {spec.featureset}\n"))  # fmt: skip
    return directory


@pytest.fixture
def settings(kafka: Any, tmp_path: Path, run: str, featuresets: Path) -> PlatformSettings:
    return PlatformSettings(
        kafka={"bootstrap_servers": kafka.bootstrap_servers},
        registry={
            "grpc_port": 0,
            "admin": {"port": free_port()},
            "artifact_dir": str(tmp_path / "artifacts"),
            "signing_key": SIGNING_KEY,
            "featuresets_dir": str(featuresets),
        },
        training={"consumer_group": f"batch-it-{run}", "featuresets_dir": str(featuresets)},
    )


async def _produce(settings: PlatformSettings, spec: ModelSpec, *, drift_at: int | None = None,
                   paced: bool = False, noise: bool = False) -> datetime:  # fmt: skip
    """Agrawal vectors and their labels DELAY events later (function 2, then 0 from
    ``drift_at``).  With ``noise``: a duplicated vector, a vector never labelled, a label of
    the wrong type, and another feature set's example — none of which is a training row."""
    await provision_topics(settings.kafka)
    t0 = datetime.now(UTC) - timedelta(hours=2)
    before = synth.Agrawal(classification_function=2, seed=9).take(drift_at or N)
    after = synth.Agrawal(classification_function=0, seed=10).take(N - (drift_at or N))
    data = [*before, *after]
    producer = make_producer(settings.kafka, "batch-it")
    await producer.start()
    try:
        for i, x, y in stream.simulate_qa(data, None, DELAY):
            at = t0 + timedelta(seconds=i)
            entity = f"c{i % 50}"
            eid = f"{spec.name}-e{i}"
            if y is None:
                vector = FeatureVector(
                    event_id=eid, entity_id=entity, event_time=at, featureset=spec.featureset,
                    featureset_version=1, values=x, produced_at=at,
                )  # fmt: skip
                fut = await send_model(producer, FEATURES, entity, vector)
                if noise and i == 100:
                    await send_model(producer, FEATURES, entity, vector)  # at-least-once
                if noise and i == 101:
                    other = vector.model_copy(update={"event_id": f"{eid}-other",
                                                      "featureset": "another"})  # fmt: skip
                    await send_model(producer, FEATURES, entity, other)
                    await send_model(producer, LABELS_VALID, entity, ValidLabel(
                        event_id=f"{eid}-other", entity_id=entity, event_time=at, label=1,
                        ingested_at=at))  # fmt: skip
            else:
                if noise and i == 102:
                    continue  # never labelled
                label: Any = "maybe" if noise and i == 103 else y
                value = ValidLabel(
                    event_id=eid, entity_id=entity, event_time=at, label=label, ingested_at=at
                )
                fut = await send_model(producer, LABELS_VALID, entity, value)
            if paced:
                await fut
        await producer.flush()
    finally:
        await producer.stop()
    return t0


async def _until(cond: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


# -- the export ----------------------------------------------------------------------------


async def test_the_export_equals_row_for_row_what_training_joins_for_the_window(
    settings: PlatformSettings, spec: ModelSpec, featuresets: Path, tmp_path: Path
) -> None:
    t0 = await _produce(settings, spec, noise=True)
    since = t0 + timedelta(seconds=40)
    request = RetrainRequest(
        request_id=f"rr-{uuid.uuid4().hex[:8]}", model_name=spec.name, reason="drift",
        since_event_time=since, requested_at=datetime.now(UTC),
    )  # fmt: skip
    loans = load_featureset(featuresets / "loans.yaml")
    sink = InMemorySink()
    core = TrainingCore(spec, sink, featureset=loans, label_spec=loans.label)
    joined = await core.window_for(request, KafkaReplay(settings.kafka))

    progress: list[tuple[int, int]] = []
    exported = await read_training_set(
        settings.kafka, spec.featureset, since=since, model=spec,
        featuresets=load_featuresets(featuresets),
        progress=lambda read, total: progress.append((read, total)),
    )  # fmt: skip
    frame = exported.frame

    # Row for row: the same examples, in the same order, with the same values and labels.
    assert len(frame) == len(joined) > 2500
    assert frame["event_id"].tolist() == [ex.event_id for ex in joined]
    features = spec.features or []
    assert list(frame.columns) == ["event_id", "entity_id", "event_time", *features, "label"]
    for row, ex in zip(frame.itertuples(index=False), joined, strict=True):
        assert row.entity_id == ex.vector.entity_id
        assert row.event_time.to_pydatetime() == ex.event_time
        assert row.label == ex.label.label
        for name in features:
            assert getattr(row, name) == ex.vector.values[name]
    # What is not a training row is in neither: before since, the wrong label type, the
    # unlabelled vector, the duplicate (once), the other feature set.
    ids = set(frame["event_id"])
    assert f"{spec.name}-e0" not in ids and f"{spec.name}-e40" in ids
    assert f"{spec.name}-e103" not in ids and f"{spec.name}-e102" not in ids
    assert frame["event_id"].is_unique and not any(i.endswith("-other") for i in ids)
    assert exported.left_out == 1
    assert frame["event_time"].min() >= pd.Timestamp(since)
    # Progress was reported, ending with every record of the range read.
    assert progress and progress[-1][0] == progress[-1][1] > len(frame)

    # And the candidate training fits for the request learns from exactly those rows.
    attempt = await core.attempt_retrain(request, KafkaReplay(settings.kafka), wait=False)
    assert attempt.status is RetrainStatus.REGISTERED
    [stored] = sink.versions[spec.name]
    metrics, lineage = stored.version.metrics, stored.version.lineage
    assert lineage is not None
    assert metrics["examples"] + metrics["eval_examples"] == len(frame)
    assert lineage.event_time_from == frame["event_time"].min().to_pydatetime()

    # --until keeps the rows before it; Parquet round-trips the table.
    until = t0 + timedelta(seconds=1000)
    bounded = await read_training_set(settings.kafka, since=since, until=until, model=spec)
    assert bounded.frame["event_id"].tolist() == [
        ex.event_id for ex in joined if ex.event_time < until
    ]
    path = tmp_path / "train.parquet"
    write_table(frame, path)
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame)


async def test_features_export_command_writes_the_training_set_with_progress_on_stderr(
    settings: PlatformSettings, spec: ModelSpec, featuresets: Path, tmp_path: Path
) -> None:
    t0 = await _produce(settings, spec)
    since = t0 + timedelta(seconds=40)
    spec_file = tmp_path / "gbm.yaml"
    spec_file.write_text(
        (ROOT / "examples" / "models" / "batch" / "loans-gbm.yaml").read_text()
        .replace("name: loans-gbm", f"name: {spec.name}")
        .replace("featureset: loans", f"featureset: {spec.featureset}")
    )  # fmt: skip
    out = tmp_path / "out" / "train.parquet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        DRIFTLINE_TRAINING__FEATURESETS_DIR=str(featuresets),
    )
    argv = [sys.executable, "-m", "driftline.cli", "features", "export", "--model",
            str(spec_file), "--since", since.isoformat(), "-o", str(out)]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "records (100%)" in done.stderr
    written = pd.read_parquet(out)
    expected = (await read_training_set(settings.kafka, since=since, model=spec)).frame
    pd.testing.assert_frame_equal(written, expected)
    assert f"wrote {len(expected):,} examples of {spec.featureset}" in done.stdout

    # A bad option: exit 2, naming it; nothing written.
    bad = await asyncio.to_thread(
        subprocess.run, [*argv[:-2], "-o", str(tmp_path / "bad.parquet"), "--featureset",
                         "other"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2
    assert f"model {spec.name} reads feature set {spec.featureset}, not other" in bad.stderr
    assert not (tmp_path / "bad.parquet").exists()


# -- batch training against the real registry ----------------------------------------------------


async def test_a_batch_model_is_fitted_on_schedule_then_refitted_for_a_retrain_request(
    settings: PlatformSettings, registry: RegistryClient, spec: ModelSpec, featuresets: Path
) -> None:
    loans = load_featureset(featuresets / "loans.yaml")
    replay = KafkaReplay(settings.kafka)
    sink = RegistrySink(registry, SIGNING_KEY)
    core = TrainingCore(spec, sink, CoreConfig(snapshot_every=1800), label_spec=loans.label,
                        featureset=loans, replay=replay)  # fmt: skip
    metrics = ServiceMetrics("training")
    health = ConsumerHealth(metrics.registry, stall_after_s=60)
    loop = KafkaTrainingLoop([core], settings, metrics, health)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await asyncio.wait_for(loop.assigned.wait(), 60)
        t0 = await _produce(settings, spec, drift_at=2000, paced=True)
        await _until(lambda: core.learner.learned >= N, "every labelled example")
        await _until(lambda: len(core.candidates) >= 1, "a scheduled fit")
    finally:
        stop.set()
        await task
    # One fit, at 1,800 labelled examples (before the drift): the next is due at 3,600.
    [scheduled] = core.candidates

    first = await registry.get(spec.name, version=1)
    assert first.framework == "sklearn" and first.artifact_format == "sklearn-pickle"
    assert "scikit-learn" in first.library_versions and "numpy" in first.library_versions
    assert first.spec["features"] == spec.features
    assert first.lineage is not None and first.lineage.trigger_id is not None
    assert first.lineage.trigger_id.startswith("schedule:")
    assert {r.topic for r in first.lineage.offsets} == {FEATURES.name, LABELS_VALID.name}
    assert scheduled.alias == "champion"
    assert (await registry.get(spec.name, alias="champion")).version == 1
    # Arrivals after the fit were scored by it: the prequential figure shows the drift.
    assert 0.4 < core.learner.prequential < 0.9
    # Signed and loadable by the scikit-learn runtime, as serving loads it.
    data, meta = await registry.download(spec.name, version=1)
    verify(data, meta.sha256, meta.signature, SIGNING_KEY)
    signature = signature_of(first.spec["features"], "binary", loans)
    runtime = load_runtime("sklearn", meta.artifact_format, data, signature, first.spec)
    fresh = list(synth.Agrawal(classification_function=2, seed=77).take(400))
    preds = runtime.predict(FeatureBatch.from_rows([x for x, _ in fresh], runtime.names))
    assert sum(int(p) == y for p, (_, y) in zip(preds.labels, fresh, strict=True)) > 360

    # A retrain request after the drift refits on the window after it and is promoted.
    request = RetrainRequest(
        request_id=f"rr-{uuid.uuid4().hex[:8]}", model_name=spec.name, reason="concept drift",
        since_event_time=t0 + timedelta(seconds=2000), requested_at=datetime.now(UTC),
        drift_ids=["drift-1"],
    )  # fmt: skip
    producer = make_producer(settings.kafka, "batch-it-retrain")
    await producer.start()
    try:
        await (await send_model(producer, RETRAIN, spec.name, request))
    finally:
        await producer.stop()
    retrain = KafkaRetrainLoop([core], settings, metrics, replay, health, unserved=sink)
    stop = asyncio.Event()
    task = asyncio.create_task(retrain.run(stop))
    try:
        await _until(lambda: core.retrains.handled >= 1, "the retrain request")
    finally:
        stop.set()
        await task
    champion = await registry.get(spec.name, alias="champion")
    assert champion.framework == "sklearn"
    assert champion.lineage is not None and champion.lineage.trigger_id == request.request_id
    assert champion.drift_ids == ["drift-1"]
    assert champion.lineage.event_time_from is not None
    assert champion.lineage.event_time_from >= request.since_event_time  # type: ignore[operator]
    assert champion.metrics["accuracy"] > champion.metrics["champion_holdout_accuracy"] + 0.1


async def test_a_retrain_request_training_cannot_serve_is_recorded_on_the_model(
    settings: PlatformSettings, registry: RegistryClient, spec: ModelSpec, featuresets: Path,
    run: str,
) -> None:  # fmt: skip
    # A model registered from elsewhere (no spec here that training could retrain).
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from driftline.training.batch import to_matrix

    data = list(synth.Agrawal(seed=3).take(300))
    matrix, _ = to_matrix([x for x, _ in data], spec.features or [])
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(matrix, [y for _, y in data])
    other = f"byo-{run}"
    await registry.register(
        other, model=model, framework="sklearn", tags={"driftline.input": "array"},
        spec=spec.model_dump(mode="json") | {"name": other, "pipeline": None},
    )  # fmt: skip
    request = RetrainRequest(
        request_id=f"rr-{uuid.uuid4().hex[:8]}", model_name=other, reason="drift",
        requested_at=datetime.now(UTC), drift_ids=["drift-7"],
    )  # fmt: skip
    producer = make_producer(settings.kafka, "batch-it-unserved")
    await producer.start()
    try:
        await (await send_model(producer, RETRAIN, other, request))
    finally:
        await producer.stop()
    loans = load_featureset(featuresets / "loans.yaml")
    sink = RegistrySink(registry, SIGNING_KEY)
    core = TrainingCore(spec, sink, featureset=loans)
    metrics = ServiceMetrics("training")
    health = ConsumerHealth(metrics.registry, stall_after_s=60)
    loop = KafkaRetrainLoop([core], settings, metrics, KafkaReplay(settings.kafka), health,
                            unserved=sink)  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))

    async def recorded() -> list[Any]:
        summary = next(m for m in await registry.list_models() if m.name == other)
        return list(summary.unserved_retrains)

    try:
        deadline = asyncio.get_running_loop().time() + 120
        while not await recorded():
            assert asyncio.get_running_loop().time() < deadline, "not recorded"
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
    [unserved] = await recorded()
    assert unserved.request_id == request.request_id
    assert unserved.drift_ids == ["drift-7"]
    assert f"training has no model spec named {other!r}" in unserved.reason
    assert loop.held == []
