"""The monitoring service as a process against the harness's real Kafka broker.

Predictions and labels with a known concept drift go in; exactly one retraining
request comes out on ``driftline.retrain``, with the detections behind it on
``driftline.drift``.  A feature whose distribution shifts is reported as data drift.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from driftline.contracts.messages import (
    DriftEvent,
    DriftKind,
    FeatureVector,
    PredictionBatch,
    PredictionRecord,
    RetrainRequest,
    ValidLabel,
)
from driftline.contracts.topics import DRIFT, FEATURES, LABELS_VALID, PREDICTIONS, RETRAIN
from driftline.devtools.infra import free_port
from driftline.kafkaio import make_producer, provision_topics, send_model
from driftline.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 5, 1, tzinfo=UTC)
BEFORE, AFTER = 2_000, 1_500


def launch_monitor(
    bootstrap: str,
    log: Path,
    *,
    port: int,
    group: str,
    instance: str,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m driftline.monitoring`` on ``port``, in consumer group ``group``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        DRIFTLINE_MONITORING__ADMIN__PORT=str(port),
        DRIFTLINE_MONITORING__CONSUMER_GROUP=group,
        DRIFTLINE_MONITORING__INSTANCE_ID=instance,
        DRIFTLINE_MONITORING__DETECTOR__WARMUP="500",
        DRIFTLINE_MONITORING__PUBLISH_INTERVAL_S="0.5",
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
    )
    env.update(extra_env or {})
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "driftline.monitoring"], env=env, stdout=out, stderr=out, cwd=ROOT
    )


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    # Generous: the shared 2-core machine can take long to import River under load.
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, f"monitoring exited:\n{log.read_text()}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"monitoring not ready:\n{log.read_text()}"
        time.sleep(0.2)


def stop_monitor(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def monitor(kafka: Any, tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    run = uuid.uuid4().hex[:8]
    port = free_port()
    group = f"monitoring-{run}"
    log = tmp_path / "monitoring.log"
    proc = launch_monitor(kafka.bootstrap_servers, log, port=port, group=group, instance=run)
    try:
        wait_ready(proc, port, log)
        yield f"http://127.0.0.1:{port}", group, proc
    finally:
        stop_monitor(proc)


async def produce_story(bootstrap: str, model: str, featureset: str) -> None:
    """A model with 5 % error, then 60 % from BEFORE on; feature ``x`` shifts at the same point.

    Before the drift each prediction is one record (as a Predict logs it); from the
    drift on, they come as batches of 50 rows (as ModelInfer and PredictBatch log them):
    the drift is only seen if the monitor reads every row of the batches.
    """
    rng = random.Random(17)
    producer = make_producer(KafkaSettings(bootstrap_servers=bootstrap), "test-monitoring")
    await producer.start()
    try:
        futures = []
        rows: list[tuple[str, str, datetime]] = []

        async def send_batch() -> None:
            batch = PredictionBatch(
                request_id=f"{model}-batch-{len(futures)}",
                event_ids=[e for e, _, _ in rows],
                entity_ids=[c for _, c, _ in rows],
                model_name=model,
                model_version=1,
                features={},
                predictions=[1] * len(rows),
                latency_ms=2.0,
                served_at=rows[0][2],
            )
            futures.append(await send_model(producer, PREDICTIONS, batch.request_id, batch))
            rows.clear()

        for i in range(BEFORE + AFTER):
            at = T0 + timedelta(seconds=i)
            wrong = rng.random() < (0.05 if i < BEFORE else 0.6)
            event_id = f"{model}-e{i}"
            vec = FeatureVector(
                event_id=event_id,
                entity_id=f"c{i % 50}",
                event_time=at,
                featureset=featureset,
                featureset_version=1,
                values={"x": rng.gauss(5.0 if i >= BEFORE else 0.0, 1.0), "y": rng.random()},
                produced_at=at,
            )
            pred = PredictionRecord(
                request_id=f"r{i}",
                event_id=event_id,
                entity_id=vec.entity_id,
                model_name=model,
                model_version=1,
                features={},
                prediction=1,
                latency_ms=2.0,
                served_at=at,
            )
            label = ValidLabel(
                event_id=event_id,
                entity_id=vec.entity_id,
                event_time=at,
                label=0 if wrong else 1,
                ingested_at=at,
            )
            futures.append(await send_model(producer, FEATURES, vec.entity_id, vec))
            if i < BEFORE:
                futures.append(await send_model(producer, PREDICTIONS, vec.entity_id, pred))
            else:
                rows.append((event_id, vec.entity_id, at))
                if len(rows) == 50:
                    await send_batch()
            futures.append(await send_model(producer, LABELS_VALID, vec.entity_id, label))
        if rows:
            await send_batch()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def caught_up(bootstrap: str, group: str, timeout: float = 120) -> None:
    """Wait until ``group`` has committed up to the end of every input partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await probe.start()
    try:
        parts = [
            TopicPartition(t.name, p)
            for t in (FEATURES, PREDICTIONS, LABELS_VALID)
            for p in range(t.partitions)
        ]
        ends = await probe.end_offsets(parts)
        deadline = time.monotonic() + timeout
        while True:
            committed = await admin.list_consumer_group_offsets(group)
            if all(tp in committed and committed[tp].offset >= ends[tp] for tp in parts):
                return
            assert time.monotonic() < deadline, "the monitor did not catch up"
            await asyncio.sleep(0.5)
    finally:
        await probe.stop()
        await admin.close()


async def read_all(bootstrap: str, topic: Any, model: str) -> list[Any]:
    """Every committed record of ``topic`` keyed by ``model``, up to the current end."""
    consumer = AIOKafkaConsumer(
        topic.name,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        ends = await consumer.end_offsets(parts)
        out: list[Any] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                out.extend(
                    topic.value_model.model_validate_json(r.value)
                    for r in recs
                    if r.key == model.encode()
                )
        return out
    finally:
        await consumer.stop()


async def refreshed(url: str, needle: str, timeout: float = 10.0) -> str:
    """``url``'s body once it contains ``needle`` (or, after ``timeout``, as it is)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            body = (await client.get(url)).text
            if needle in body or time.monotonic() > deadline:
                return body
            await asyncio.sleep(0.2)


async def test_a_concept_drift_gives_one_retrain_request_and_its_drift_events(
    kafka: Any, monitor: tuple[str, str, subprocess.Popen[bytes]]
) -> None:
    url, group, _ = monitor
    bootstrap = kafka.bootstrap_servers
    await provision_topics(KafkaSettings(bootstrap_servers=bootstrap))
    model = f"loans-{uuid.uuid4().hex[:6]}"
    featureset = f"fs-{model}"
    await produce_story(bootstrap, model, featureset)
    await caught_up(bootstrap, group)

    requests: list[RetrainRequest] = await read_all(bootstrap, RETRAIN, model)
    drift: list[DriftEvent] = await read_all(bootstrap, DRIFT, model)
    assert len(requests) == 1, requests
    concept = sorted((d for d in drift if d.kind == DriftKind.CONCEPT), key=lambda d: d.detected_at)
    # An unanswered drift may be detected again while its episode stays open;
    # it never asks twice, and the request names the first detection.
    assert concept, "the concept drift was not detected"
    assert requests[0].drift_ids == [concept[0].drift_id]
    since = requests[0].since_event_time
    assert since is not None and T0 + timedelta(seconds=BEFORE - 300) <= since
    assert since <= T0 + timedelta(seconds=BEFORE + AFTER)

    # The feature set has no registered model here, so data drift is keyed by its name.
    data: list[DriftEvent] = await read_all(bootstrap, DRIFT, featureset)
    assert data and {f for d in data for f in d.features} == {"x"}

    # The gauges and the dashboard series are refreshed every publish interval
    # (0.5 s here), not per record: the last batch may land after the last refresh.
    metrics = await refreshed(
        f"{url}/metrics", f'driftline_drift_statistic{{featureset="{featureset}",feature="x"'
    )
    assert f'driftline_retrain_requests_total{{model="{model}"}} 1.0' in metrics
    assert f'driftline_live_accuracy{{model="{model}"}}' in metrics
    assert any(
        line.startswith("driftline_drift_statistic{") and 'feature="x"' in line
        for line in metrics.splitlines()
    )
    series = httpx.get(f"{url}/api/timeseries", timeout=5).json()
    assert f"accuracy/{model}" in series["series"]
