"""Records the monitor cannot use are skipped with a reason; the monitor goes on.

The core refuses what cannot be right (a registry event or prediction naming a
version the models log never registered, a label that cannot be compared with its
prediction) before any detector sees it; the Kafka loop skips those, unreadable
records and records whose processing raises, counting each in
``driftline_records_skipped_total{topic, reason}``.  Publishing is I/O: failures
are retried and reported as a stall; a detection the broker refuses is dropped alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from driftline.contracts.messages import (
    DriftEvent,
    DriftKind,
    FeatureVector,
    PredictionRecord,
    RegistryEvent,
    RegistryEventKind,
    ValidLabel,
)
from driftline.contracts.topics import FEATURES, LABELS_VALID, MODELS, PREDICTIONS
from driftline.monitoring.core import MonitorCore, Outputs, Refused
from driftline.monitoring.kafka_loop import KafkaMonitorLoop
from driftline.monitoring.monitor_metrics import MonitorMetrics
from driftline.settings import MonitoringSettings, PlatformSettings
from driftline.telemetry import ConsumerHealth, ServiceMetrics

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _registry(kind: RegistryEventKind, version: int, **kw: Any) -> RegistryEvent:
    fields: dict[str, Any] = {
        "event_id": f"{kind.value}-{version}-{kw.get('model_name', 'loans')}",
        "kind": kind,
        "model_name": "loans",
        "version": version,
        "actor": "t",
        "at": T0,
    }
    if kind is not RegistryEventKind.REGISTERED:
        fields["alias"] = "champion"
    fields.update(kw)
    return RegistryEvent(**fields)


def _prediction(i: int, version: int = 1, prediction: Any = 1) -> PredictionRecord:
    return PredictionRecord(
        request_id=f"r{i}", event_id=f"e{i}", entity_id="c", model_name="loans",
        model_version=version, features={}, prediction=prediction, latency_ms=1.0, served_at=T0,
    )  # fmt: skip


def _label(i: int, label: Any) -> ValidLabel:
    return ValidLabel(event_id=f"e{i}", entity_id="c", event_time=T0, label=label, ingested_at=T0)


def _vector(i: int, x: Any) -> FeatureVector:
    return FeatureVector(
        event_id=f"e{i}", entity_id="c", event_time=T0 + timedelta(seconds=i),
        featureset="loans", featureset_version=1, values={"x": x}, produced_at=T0,
    )  # fmt: skip


@pytest.fixture
def core() -> MonitorCore:
    """Model ``loans`` with v1 registered and champion."""
    core = MonitorCore(MonitoringSettings(), clock=lambda: T0)
    core.on_registry(_registry(RegistryEventKind.REGISTERED, 1))
    core.on_registry(_registry(RegistryEventKind.ALIAS_SET, 1))
    return core


def _refusal(call: Any, *args: Any) -> str:
    with pytest.raises(Refused) as refused:
        call(*args)
    return refused.value.reason


def test_registry_events_naming_what_was_never_registered_leave_the_champion(
    core: MonitorCore,
) -> None:
    for i in range(20):  # some outcomes the detector has seen
        core.on_prediction(_prediction(i))
        core.on_label(_label(i, 1))
    state = core.models["loans"]
    assert state.labelled == 20

    alias = RegistryEventKind.ALIAS_SET
    assert _refusal(core.on_registry, _registry(alias, 1, model_name="ghost")) == "unknown_model"
    assert _refusal(core.on_registry, _registry(alias, 99)) == "unknown_version"
    rollback = RegistryEventKind.ROLLED_BACK
    assert _refusal(core.on_registry, _registry(rollback, 0)) == "unknown_version"
    # A reference that does not parse would fail every feature vector of its feature set.
    bad = _registry(RegistryEventKind.REGISTERED, 2, spec={"reference": {"features": 3}})
    assert _refusal(core.on_registry, bad) == "invalid"
    assert _refusal(core.on_registry, _registry(alias, 2)) == "unknown_version"

    assert state.champion_version == 1
    assert state.labelled == 20 and state.live_accuracy == 1.0  # not re-baselined
    # Deleting the alias is no refusal: the model has no champion until the next one.
    core.on_registry(_registry(alias, 0))
    assert state.champion_version is None


def test_a_prediction_is_taken_whatever_its_version_and_model(core: MonitorCore) -> None:
    # A new champion's first answers may be read before its registration on the models
    # log (another topic): they are taken, not refused.
    core.on_prediction(_prediction(1, version=7))
    # A model the registry does not list is watched all the same.
    other = _prediction(2).model_copy(update={"model_name": "unregistered"})
    core.on_prediction(other)
    assert core.counts["predictions"] == 2


def test_a_label_of_another_type_than_the_prediction_is_refused(core: MonitorCore) -> None:
    core.on_prediction(_prediction(1))
    assert _refusal(core.on_label, _label(1, "maybe")) == "label_type"
    # The label read first is refused when its prediction comes.
    core.on_label(_label(2, "maybe"))
    out = core.on_prediction(_prediction(2))
    assert [r.event_id for r in out.refused_labels] == ["e2"]
    assert "'maybe'" in out.refused_labels[0].detail
    state = core.models["loans"]
    assert state.labelled == 0 and state.live_accuracy is None  # no outcome was counted


class Loop:
    """A :class:`KafkaMonitorLoop` over a chartless core, with its health and metrics."""

    def __init__(self, core: MonitorCore, stall_after_s: float = 60) -> None:
        self.metrics = ServiceMetrics("monitoring")
        self.health = ConsumerHealth(self.metrics.registry, stall_after_s=stall_after_s)
        self.loop = KafkaMonitorLoop(
            core, PlatformSettings(), self.metrics, MonitorMetrics(self.metrics), self.health
        )
        self._offsets: dict[str, Iterator[int]] = {}

    def feed(self, topic: str, value: bytes | None) -> Outputs:
        offsets = self._offsets.setdefault(topic, iter(range(1_000_000)))
        record = SimpleNamespace(
            topic=topic, partition=0, offset=next(offsets), value=value, headers=[], timestamp=0
        )
        return self.loop.dispatch(record)


def test_the_loop_skips_bad_records_and_processes_the_next(core: MonitorCore) -> None:
    loop = Loop(core)
    loop.feed(FEATURES.name, b"\xff\xfe not json")
    loop.feed(PREDICTIONS.name, None)
    loop.feed(LABELS_VALID.name, b'{"event_id": "e1"}')
    loop.feed(MODELS.name, b"[[[[[[")
    # An int beyond float range makes the detector raise: a processing error, skipped.
    loop.feed(FEATURES.name, _vector(1, 10**400).model_dump_json().encode())
    loop.feed(
        MODELS.name,
        _registry(RegistryEventKind.ALIAS_SET, 1, model_name="ghost").model_dump_json().encode(),
    )
    loop.feed(PREDICTIONS.name, _prediction(3).model_dump_json().encode())
    loop.feed(LABELS_VALID.name, _label(3, "maybe").model_dump_json().encode())
    loop.feed(LABELS_VALID.name, _label(4, "maybe").model_dump_json().encode())
    loop.feed(PREDICTIONS.name, _prediction(4).model_dump_json().encode())

    skipped = {
        (topic, reason): loop.health.skipped(topic, reason)
        for topic in (FEATURES.name, PREDICTIONS.name, LABELS_VALID.name, MODELS.name)
        for reason in (
            "unreadable",
            "processing_error",
            "unknown_version",
            "unknown_model",
            "label_type",
        )
        if loop.health.skipped(topic, reason)
    }
    assert skipped == {
        (FEATURES.name, "unreadable"): 1,
        (PREDICTIONS.name, "unreadable"): 1,
        (LABELS_VALID.name, "unreadable"): 1,
        (MODELS.name, "unreadable"): 1,
        (FEATURES.name, "processing_error"): 1,
        (MODELS.name, "unknown_model"): 1,
        (LABELS_VALID.name, "label_type"): 2,
    }
    # What comes after is processed.
    features_before = core.counts["features"]
    loop.feed(FEATURES.name, _vector(5, 0.5).model_dump_json().encode())
    assert core.counts["features"] == features_before + 1
    loop.feed(PREDICTIONS.name, _prediction(6).model_dump_json().encode())
    loop.feed(LABELS_VALID.name, _label(6, 1).model_dump_json().encode())
    assert core.models["loans"].live_accuracy == 1.0
    text = loop.metrics.render().decode()
    assert (
        'driftline_records_skipped_total{reason="label_type",topic="driftline.labels.valid"} 2.0'
        in text
    )


def _drift(drift_id: str) -> DriftEvent:
    return DriftEvent(
        drift_id=drift_id, model_name="loans", kind=DriftKind.DATA, features=["x"],
        detector="psi", statistic=0.5, threshold=0.2, window=100, severity="warning",
        detected_at=T0,
    )  # fmt: skip


class StandInProducer:
    """``send`` as aiokafka's: fails with :attr:`failures` (in turn), refuses :attr:`refused`
    ids for their size, and notes the stalls ``health`` reports at each call."""

    def __init__(self, health: ConsumerHealth) -> None:
        self.health = health
        self.failures: list[Exception] = []
        self.refused: set[bytes] = set()
        self.sent: list[bytes] = []
        self.stalls_seen: list[list[tuple[str, int, int]]] = []

    async def send(self, topic: str, value: bytes, **kw: Any) -> asyncio.Future[None]:
        self.stalls_seen.append(self.health.stalled())
        if self.failures:
            raise self.failures.pop(0)
        if any(r in value for r in self.refused):
            raise MessageSizeTooLargeError("the message is too large")
        self.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_failed_publications_are_retried_and_reported_as_a_stall(
    core: MonitorCore,
) -> None:
    loop = Loop(core, stall_after_s=0)
    producer = StandInProducer(loop.health)
    producer.failures = [KafkaConnectionError("broker down")] * 2
    data = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")  # not started: positions given
    await loop.loop.publish_with_retry(
        producer,  # type: ignore[arg-type]
        Outputs(drift=[_drift("d1")]),
        asyncio.Event(),
        data,
        {(PREDICTIONS.name, 3): 120},
    )
    assert len(producer.sent) == 1
    assert producer.stalls_seen == [[], [(PREDICTIONS.name, 3, 120)], [(PREDICTIONS.name, 3, 120)]]
    assert loop.health.stalled() == []


async def test_a_detection_the_broker_refuses_is_dropped_and_the_others_published(
    core: MonitorCore,
) -> None:
    loop = Loop(core)
    producer = StandInProducer(loop.health)
    producer.refused = {b"d-huge"}
    data = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
    out = Outputs(drift=[_drift("d-1"), _drift("d-huge"), _drift("d-3")])
    await loop.loop.publish_with_retry(
        producer,  # type: ignore[arg-type]
        out,
        asyncio.Event(),
        data,
        {(FEATURES.name, 0): 5},
    )
    published = [DriftEvent.model_validate_json(v).drift_id for v in producer.sent]
    assert "d-huge" not in published and {"d-1", "d-3"} <= set(published)
    assert 'driftline_errors_total{kind="unpublishable"} 1.0' in loop.metrics.render().decode()


def _batch_json(predictions: list[str], **kw: str) -> bytes:
    """A ``PredictionBatch`` of model ``loans`` v1 whose rows carry event ids ``e100`` …"""
    n = len(predictions)
    events = ", ".join(f'"e{100 + i}"' for i in range(n))
    extra = "".join(f', "{k}": {v}' for k, v in kw.items())
    return (
        f'{{"request_id": "batch-1", "event_ids": [{events}], "model_name": "loans",'
        f' "model_version": 1, "features": {{}}, "predictions": [{", ".join(predictions)}],'
        f' "latency_ms": 1.0, "served_at": "2026-05-01T00:00:00Z"{extra}}}'
    ).encode()


def test_a_batch_feeds_every_row_and_a_row_that_fails_is_skipped_alone(
    core: MonitorCore, caplog: pytest.LogCaptureFixture
) -> None:
    loop = Loop(core)
    # The middle row's prediction is beyond float range: the detector raises on it.
    with caplog.at_level("WARNING"):
        loop.feed(PREDICTIONS.name, _batch_json(["1", str(10**400), "0"]))
    assert core.counts["predictions"] == 3
    assert loop.health.skipped(PREDICTIONS.name, "processing_error") == 1
    [line] = [r.getMessage() for r in caplog.records if "skipped the record" in r.getMessage()]
    assert "(event e101)" in line and "prediction 'batch-1/1': OverflowError" in line
    # The other rows were joined: their labels make outcomes.
    loop.feed(LABELS_VALID.name, _label(100, 1).model_dump_json().encode())
    loop.feed(LABELS_VALID.name, _label(102, 0).model_dump_json().encode())
    assert core.models["loans"].labelled == 2 and core.models["loans"].live_accuracy == 1.0

    # A batch that does not validate is skipped whole, with the column at fault named.
    out = loop.feed(PREDICTIONS.name, _batch_json(["1", "0"], entity_ids='["only-one"]'))
    assert out == Outputs() and core.counts["predictions"] == 3
    assert loop.health.skipped(PREDICTIONS.name, "unreadable") == 1


def test_an_unreadable_batch_names_its_column_in_the_skip(
    core: MonitorCore, caplog: pytest.LogCaptureFixture
) -> None:
    loop = Loop(core)
    with caplog.at_level("WARNING"):
        loop.feed(PREDICTIONS.name, _batch_json(["1", "0"], entity_ids='["only-one"]'))
    [line] = [r.getMessage() for r in caplog.records if "skipped the record" in r.getMessage()]
    assert "unreadable" in line and "column entity_ids has 1 values for 2 predictions" in line
