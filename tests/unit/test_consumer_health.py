"""Skipped records are counted and logged; a partition stuck at one offset is reported once."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from driftline.contracts.errors import InvalidArgumentError, NotFoundError, UnavailableError
from driftline.kafkaio import is_record_fault
from driftline.telemetry import ConsumerHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_skip_is_counted_by_topic_and_reason_and_logged_with_its_place(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    health = ConsumerHealth(registry, stall_after_s=60)
    with caplog.at_level(logging.WARNING):
        health.skip("driftline.models", 0, 17, "unknown_version", "v9 of loans does not exist")
        health.skip("driftline.models", 0, 18, "unknown_version", "v10 of loans does not exist")
        health.skip("driftline.labels.valid", 3, 5, "label_type", "'maybe'", event_id="e-1")
    total = "driftline_records_skipped_total"
    assert _sample(registry, total, topic="driftline.models", reason="unknown_version") == 2
    assert _sample(registry, total, topic="driftline.labels.valid", reason="label_type") == 1
    assert "driftline.models[0]@17" in caplog.text
    assert "driftline.labels.valid[3]@5 (event e-1): label_type: 'maybe'" in caplog.text


def test_a_stall_is_reported_once_past_the_setting_and_cleared_when_the_partition_moves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, clock = CollectorRegistry(), Clock()
    health = ConsumerHealth(registry, stall_after_s=60, clock=clock)
    part = ("driftline.events", 2)
    labels = {"topic": "driftline.events", "partition": "2"}
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            health.failed({part: 41}, "KafkaConnectionError: broker down")
            clock.now += 25
        assert _sample(registry, "driftline_consumer_stall_seconds", **labels) == 50
        assert _sample(registry, "driftline_consumer_stalled", **labels) is None
        health.failed({part: 41}, "KafkaConnectionError: broker down")  # 75 s in
        health.failed({part: 41}, "KafkaConnectionError: broker down")
    assert _sample(registry, "driftline_consumer_stalled", **labels) == 1
    assert health.stalled() == [("driftline.events", 2, 41)]
    stalls = [r for r in caplog.records if "consumer stalled" in r.getMessage()]
    assert len(stalls) == 1 and stalls[0].levelno == logging.ERROR
    assert "driftline.events[2] has failed at offset 41 for 75s" in stalls[0].getMessage()
    assert "broker down" in stalls[0].getMessage()

    health.progressed([part])
    assert _sample(registry, "driftline_consumer_stalled", **labels) == 0
    assert _sample(registry, "driftline_consumer_stall_seconds", **labels) == 0
    assert health.stalled() == []


def test_a_failure_at_a_new_offset_starts_the_clock_again() -> None:
    registry, clock = CollectorRegistry(), Clock()
    health = ConsumerHealth(registry, stall_after_s=60, clock=clock)
    part = ("driftline.features", 0)
    health.failed({part: 10}, "slow")
    clock.now += 50
    health.failed({part: 11}, "slow")  # it moved on: a new stall candidate
    clock.now += 50
    health.failed({part: 11}, "slow")
    assert health.stalled() == []
    clock.now += 11
    health.failed({part: 11}, "slow")
    assert health.stalled() == [("driftline.features", 0, 11)]


@pytest.mark.parametrize(
    ("error", "record_fault"),
    [
        (MessageSizeTooLargeError("1,200,487 bytes"), True),
        (TypeError("'<' not supported between instances of 'int' and 'str'"), True),
        (OverflowError("int too large to convert to float"), True),
        (InvalidArgumentError("bad"), True),
        (NotFoundError("no such version"), True),
        (KafkaConnectionError(), False),
        (KafkaTimeoutError(), False),
        (TopicAuthorizationFailedError(), False),  # the operator's to fix, not the record's
        (UnavailableError("redis down"), False),
        (RedisConnectionError("refused"), False),
        (ConnectionResetError(), False),
    ],
)
def test_record_faults_are_told_from_the_worlds(error: BaseException, record_fault: bool) -> None:
    assert is_record_fault(error) is record_fault


def test_a_partition_that_went_through_has_its_stall_gauge_at_zero() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    health = ConsumerHealth(registry, stall_after_s=60)
    assert "driftline_consumer_stalled{" not in generate_latest(registry).decode()
    health.progressed([("driftline.events", 3)])
    text = generate_latest(registry).decode()
    assert 'driftline_consumer_stalled{partition="3",topic="driftline.events"} 0.0' in text
