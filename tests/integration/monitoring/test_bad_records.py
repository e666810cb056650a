"""Records the monitor cannot use, written with kcat: skipped and counted, the monitor goes on.

``python -m driftline.monitoring`` runs against the real broker and watches a
registered model (v1 champion).  Every topic it reads gets unreadable records
(not JSON, invalid UTF-8, a tombstone, the wrong schema), and records that
cannot be right: registry events moving the champion of a model or to a version
never registered, a rollback to nothing; a feature vector whose number makes the
detector raise; a label ``"maybe"`` for the model answering 0/1.  A stream of
valid records follows: the monitor processes it (the model's live accuracy
appears, all right answers, so the bogus champion moves were not applied),
/metrics counts each bad record in
``driftline_records_skipped_total{topic, reason}``, and the process never restarts.
"""

from __future__ import annotations

import asyncio
import json
import os
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
from support.internal_records import GARBAGE, delta, kcat_produce, scrape_skipped

from driftline.contracts.messages import (
    FeatureVector,
    Lineage,
    PredictionRecord,
    RegistryEvent,
    RegistryEventKind,
    ValidLabel,
)
from driftline.contracts.topics import FEATURES, LABELS_VALID, MODELS, PREDICTIONS
from driftline.devtools.infra import free_port
from driftline.kafkaio import make_producer, provision_topics, send_model
from driftline.settings import KafkaSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 6, 1, tzinfo=UTC)
VALID = 600
"""Valid (feature, prediction, label) triples after the bad records."""


@pytest.fixture
def monitor(kafka: Any, tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[bytes], Path]]:
    """The monitoring service as a process: admin URL, consumer group, process, log path."""
    run = uuid.uuid4().hex[:8]
    port = free_port()
    group = f"monitoring-bad-{run}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DRIFTLINE_MONITORING__ADMIN__PORT=str(port),
        DRIFTLINE_MONITORING__CONSUMER_GROUP=group,
        DRIFTLINE_MONITORING__INSTANCE_ID=run,
        DRIFTLINE_MONITORING__PUBLISH_INTERVAL_S="0.5",
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
    )
    log = tmp_path / "monitoring.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.monitoring"],
            env=env,
            stdout=out,
            stderr=out,
            cwd=ROOT,
        )
    # Generous: the shared 2-core machine can take long to import River under load.
    deadline = time.monotonic() + 180
    try:
        while True:
            assert proc.poll() is None, f"monitoring exited:\n{log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"monitoring not ready:\n{log.read_text()}"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", group, proc, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def caught_up(bootstrap: str, group: str, timeout: float = 180) -> None:
    """Wait until ``group`` has committed up to the end of every data partition."""
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
            # A partition nothing was ever written to needs no commit.
            if all((committed[tp].offset if tp in committed else 0) >= ends[tp] for tp in parts):
                return
            assert time.monotonic() < deadline, "the monitor did not catch up"
            await asyncio.sleep(0.5)
    finally:
        await probe.stop()
        await admin.close()


def _registry(kind: RegistryEventKind, model: str, version: int, **kw: Any) -> RegistryEvent:
    return RegistryEvent(
        event_id=uuid.uuid4().hex,
        kind=kind,
        model_name=model,
        version=version,
        actor="test",
        at=datetime.now(UTC),
        **kw,
    )


def _vector(event_id: str, featureset: str, x: Any, at: datetime) -> FeatureVector:
    return FeatureVector(
        event_id=event_id, entity_id="c-1", event_time=at, featureset=featureset,
        featureset_version=1, values={"x": x}, produced_at=at,
    )  # fmt: skip


def _prediction(event_id: str, model: str, version: int, at: datetime) -> PredictionRecord:
    return PredictionRecord(
        request_id=f"r-{event_id}", event_id=event_id, entity_id="c-1", model_name=model,
        model_version=version, features={}, prediction=1, latency_ms=2.0, served_at=at,
    )  # fmt: skip


def _label(event_id: str, label: Any, at: datetime) -> ValidLabel:
    return ValidLabel(
        event_id=event_id, entity_id="c-1", event_time=at, label=label, ingested_at=at
    )


def _json(model: Any) -> bytes:
    return str(model.model_dump_json()).encode()


async def test_bad_records_on_every_topic_are_skipped_and_the_monitor_goes_on(
    kafka: Any, monitor: tuple[str, str, subprocess.Popen[bytes], Path]
) -> None:
    url, group, proc, log = monitor
    bootstrap = kafka.bootstrap_servers
    await provision_topics(KafkaSettings(bootstrap_servers=bootstrap))
    model = f"loans-{uuid.uuid4().hex[:6]}"
    featureset = f"fs-{model}"
    producer = make_producer(KafkaSettings(bootstrap_servers=bootstrap), "test-monitoring-bad")
    await producer.start()
    try:
        lineage = Lineage(featureset=featureset, featureset_version=1)
        for event in (
            _registry(RegistryEventKind.REGISTERED, model, 1, lineage=lineage),
            _registry(RegistryEventKind.ALIAS_SET, model, 1, alias="champion"),
        ):
            await (await send_model(producer, MODELS, model, event))
        await caught_up(bootstrap, group)
        before = await scrape_skipped(url)

        garbage = list(GARBAGE.values())
        # A JSON int beyond float range: the drift detector cannot take it.
        huge = json.loads(_json(_vector(f"{model}-huge", featureset, 0.0, T0)))
        huge["values"]["x"] = 10**400
        kcat_produce(bootstrap, FEATURES, [*garbage, json.dumps(huge).encode()], key=model)
        kcat_produce(
            bootstrap,
            PREDICTIONS,
            [
                *garbage,
                _json(_prediction(f"{model}-maybe", model, 1, T0)),
            ],
            key=model,
        )
        kcat_produce(
            bootstrap,
            LABELS_VALID,
            [*garbage, _json(_label(f"{model}-maybe", "maybe", T0))],
            key=model,
        )
        bogus = [
            _registry(RegistryEventKind.ALIAS_SET, f"ghost-{model}", 1, alias="champion"),
            _registry(RegistryEventKind.ALIAS_SET, model, 99, alias="champion", previous_version=1),
            _registry(
                RegistryEventKind.ROLLED_BACK, model, 0, alias="champion", previous_version=1
            ),
        ]
        kcat_produce(bootstrap, MODELS, [*garbage, *map(_json, bogus)], key=model)

        futures = []
        for i in range(VALID):
            at = T0 + timedelta(seconds=i)
            event_id = f"{model}-e{i}"
            futures.append(
                await send_model(
                    producer, FEATURES, "c-1", _vector(event_id, featureset, i % 7, at)
                )
            )
            futures.append(
                await send_model(producer, PREDICTIONS, "c-1", _prediction(event_id, model, 1, at))
            )
            futures.append(await send_model(producer, LABELS_VALID, "c-1", _label(event_id, 1, at)))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    await caught_up(bootstrap, group)

    expected = {
        (FEATURES.name, "unreadable"): 4.0,
        (PREDICTIONS.name, "unreadable"): 4.0,
        (LABELS_VALID.name, "unreadable"): 4.0,
        (MODELS.name, "unreadable"): 4.0,
        (FEATURES.name, "processing_error"): 1.0,
        (LABELS_VALID.name, "label_type"): 1.0,
        (MODELS.name, "unknown_model"): 1.0,
        (MODELS.name, "unknown_version"): 2.0,
    }
    deadline = time.monotonic() + 60
    while (moved := delta(await scrape_skipped(url), before)) != expected:
        assert time.monotonic() < deadline, moved
        await asyncio.sleep(0.5)

    # The valid records after them were processed, against champion v1: every answer
    # right (a champion moved to v99 would have ignored v1's outcomes).
    accuracy = f'driftline_live_accuracy{{model="{model}"}} 1.0'
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=5) as http:
        while accuracy not in (metrics := (await http.get(f"{url}/metrics")).text):
            assert time.monotonic() < deadline, metrics
            await asyncio.sleep(0.5)
        series = (await http.get(f"{url}/api/timeseries")).json()
    assert f"accuracy/{model}" in series["series"]
    assert proc.poll() is None
    text = log.read_text()
    for topic in (FEATURES, PREDICTIONS, LABELS_VALID, MODELS):
        assert f"skipped the record at {topic.name}[0]@" in text
    assert "OverflowError" in text  # the processing error, with its traceback
