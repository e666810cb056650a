"""The prediction-log writer against the real broker: one Kafka record per batch entry.

A ModelInfer-sized entry (256 rows) becomes one ``PredictionBatch`` record keyed by
its request id, its shadow's batch a second; a single Predict stays one
``PredictionRecord`` keyed by its entity; each carries the request's traceparent;
the written counter counts rows. A batch above the topic's record size is split so
the broker takes every row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from river import tree
from river.datasets import synth

from driftline.contracts.messages import PredictionRecord, prediction_records
from driftline.contracts.topics import PREDICTIONS
from driftline.kafkaio import make_producer, provision_topics, traceparent_of
from driftline.model_runtimes import FeatureBatch
from driftline.serving.kafka_loop import PredictionLogWriter
from driftline.serving.loaded_model import LoadedModel
from driftline.serving.prediction_log import PendingBatch, PendingPrediction, PredictionLog
from driftline.serving.serving_metrics import ServingMetrics
from driftline.settings import PlatformSettings
from driftline.telemetry import ServiceMetrics
from driftline.v1 import feature_store_pb2

from .conftest import LOAN_TYPES, MODEL, SPEC, agrawal_rows

pytestmark = pytest.mark.integration

TYPES: dict[str, Any] = {
    n: "FP64" if t == feature_store_pb2.FEATURE_TYPE_DOUBLE else "INT64"
    for n, t in LOAN_TYPES.items()
}
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


def _model(version: int, function: int) -> LoadedModel:
    learner = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in synth.Agrawal(classification_function=function, seed=function).take(1000):
        learner.learn_one(x, y)
    return LoadedModel.build(MODEL, version, learner, spec=SPEC, feature_types=TYPES)


def _batch(
    model: LoadedModel, rows: list[dict[str, Any]], request_id: str, **kw: Any
) -> PendingBatch:
    columns = {n: [r[n] for r in rows] for n in model.feature_names}
    features = FeatureBatch.from_columns(columns, len(rows), model.feature_names)
    return PendingBatch(
        request_id,
        model,
        "champion",
        features,
        model.predict(features),
        2.0,
        1_790_000_000.0,
        **kw,
    )


async def _records_keyed(settings: PlatformSettings, keys: set[bytes]) -> list[Any]:
    """Every record of driftline.predictions up to its current end whose key is in ``keys``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=None,
        max_partition_fetch_bytes=settings.kafka.max_message_bytes,
    )
    await consumer.start()
    try:
        parts = [TopicPartition(PREDICTIONS.name, p) for p in range(PREDICTIONS.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[Any] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(r for r in records if r.key in keys)
        return out
    finally:
        await consumer.stop()


async def _write(
    settings: PlatformSettings, fill: Callable[[PredictionLog], None]
) -> tuple[PredictionLog, str]:
    """Offer what ``fill`` offers, let a real writer hand it all to Kafka; the metrics text."""
    await provision_topics(settings.kafka)
    metrics = ServingMetrics(ServiceMetrics("serving"))
    buffer = PredictionLog(
        100_000, on_drop=lambda reason, n: metrics.log_dropped.labels(reason=reason).inc(n)
    )
    fill(buffer)
    producer = make_producer(settings.kafka, f"test-writer-{uuid.uuid4().hex[:6]}")
    await producer.start()
    try:
        writer = PredictionLogWriter(
            producer,
            buffer,
            metrics,
            batch=2000,
            max_record_bytes=settings.kafka.max_message_bytes,
        )
        while len(buffer):
            await writer.write_once(timeout_s=0)
        await writer.drain()
    finally:
        await producer.stop()
    return buffer, metrics.base.render().decode()


async def test_a_batch_entry_is_one_record_and_its_shadow_another(
    platform_settings: PlatformSettings,
) -> None:
    champion, shadow = _model(1, 0), _model(2, 2)
    rows = agrawal_rows(256, seed=31)
    request_id = uuid.uuid4().hex
    entity = f"entity-{request_id}"
    context = trace.set_span_in_context(
        NonRecordingSpan(SpanContext(TRACE_ID, 0x00F067AA0BA902B7, False, TraceFlags(1)))
    )
    entry = _batch(champion, rows, request_id, shadow=shadow, trace=context)
    single = PendingPrediction(
        "single-" + request_id, "ev-1", entity, champion, "champion", rows[0], 1,
        {"0": 0.4, "1": 0.6}, 1.0, 1_790_000_000.0, None, context,
    )  # fmt: skip

    def fill(buffer: PredictionLog) -> None:
        buffer.offer(entry)
        buffer.offer(single)

    buffer, metrics = await _write(platform_settings, fill)
    records = await _records_keyed(platform_settings, {request_id.encode(), entity.encode()})

    batches = [r for r in records if r.key == request_id.encode()]
    [one] = [r for r in records if r.key == entity.encode()]
    assert len(batches) == 2  # the answered rows, and the shadow's
    answered, shadowed = sorted(
        (prediction_records(r.value) for r in batches), key=lambda rs: rs[0].shadow
    )
    assert [r.request_id for r in answered] == [f"{request_id}/{i}" for i in range(256)]
    assert [r.features for r in answered] == rows
    assert [r.prediction for r in answered] == list(entry.predictions.labels)
    assert {(r.model_version, r.shadow) for r in shadowed} == {(2, True)}
    assert [r.prediction for r in shadowed] == [shadow.score(x)[0] for x in rows]
    assert PredictionRecord.model_validate_json(one.value).request_id == "single-" + request_id
    # Every record carries the request's trace.
    assert {traceparent_of(r.headers).split("-")[1] for r in records} == {f"{TRACE_ID:032x}"}

    # Counted in rows (rates stay in rows), Kafka records as messages.
    assert 'driftline_serving_prediction_log_written_total{kind="answered"} 257.0' in metrics
    assert 'driftline_serving_prediction_log_written_total{kind="shadow"} 256.0' in metrics
    assert 'driftline_messages_out_total{topic="driftline.predictions"} 3.0' in metrics
    assert buffer.dropped == 0


async def test_a_batch_above_the_record_size_reaches_kafka_in_parts(
    platform_settings: PlatformSettings,
) -> None:
    model = _model(1, 0)
    rows = agrawal_rows(15_000, seed=32)
    request_id = uuid.uuid4().hex
    entry = _batch(model, rows, request_id)

    buffer, metrics = await _write(platform_settings, lambda b: b.offer(entry))

    records = await _records_keyed(platform_settings, {request_id.encode()})
    assert len(records) > 1  # 15,000 rows (~1.5 MB) do not fit in one record of the topic
    assert all(len(r.value) <= platform_settings.kafka.max_message_bytes for r in records)
    logged = [p for r in records for p in prediction_records(r.value)]
    assert sorted(p.request_id for p in logged) == sorted(
        f"{request_id}/{i}" for i in range(15_000)
    )
    assert buffer.dropped == 0
    assert 'driftline_serving_prediction_log_written_total{kind="answered"} 15000.0' in metrics
