from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from driftline.contracts import errors
from driftline.contracts.messages import DeadLetter, DlqReason, RawEvent, RawLabel
from driftline.contracts.topics import ALL_TOPICS, EVENTS, EVENTS_VALID, MODELS, topic_by_name
from driftline.kafkaio import send_model
from driftline.settings import KafkaSettings

README = Path(__file__).resolve().parents[2] / "README.md"
"""The repository's own statement of the topic contract (its Topics table)."""


def test_rfc3339_and_epoch_millis_mean_the_same_instant() -> None:
    a = RawEvent.model_validate_json(
        '{"event_id":"e","entity_id":"c","timestamp":"2026-11-23T16:00:00.123Z","features":{}}'
    )
    b = RawEvent.model_validate_json(
        '{"event_id":"e","entity_id":"c","timestamp":1795449600123,"features":{}}'
    )
    assert a.timestamp == b.timestamp == datetime(2026, 11, 23, 16, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    "payload",
    [
        '{"event_id":"e","entity_id":"c","timestamp":"2026-11-23T16:00:00","features":{}}',
        '{"event_id":"e","entity_id":"c","timestamp":true,"features":{}}',
        '{"event_id":"","entity_id":"c","timestamp":1,"features":{}}',
        '{"event_id":"e","entity_id":"c","timestamp":1,"features":{},"extra":1}',
        '{"event_id":"e","timestamp":1,"features":{}}',
        '{"event_id":"e","entity_id":"c","timestamp":1,"features":{"a":[1]}}',
    ],
    ids=["naive-time", "bool-time", "empty-id", "unknown-field", "no-entity", "list-value"],
)
def test_raw_event_rejects_bad_payloads(payload: str) -> None:
    with pytest.raises(ValidationError):
        RawEvent.model_validate_json(payload)


def test_feature_values_keep_their_types() -> None:
    e = RawEvent.model_validate_json(
        '{"event_id":"e","entity_id":"c","timestamp":1,'
        '"features":{"i":41,"f":1.5,"s":"sedan","b":true,"n":null}}'
    )
    assert e.features == {"i": 41, "f": 1.5, "s": "sedan", "b": True, "n": None}
    assert type(e.features["i"]) is int and type(e.features["b"]) is bool


def test_label_round_trip_serialises_rfc3339() -> None:
    label = RawLabel(event_id="e", entity_id="c", timestamp=1000, label=1)  # type: ignore[arg-type]
    assert '"timestamp":"1970-01-01T00:00:01.000000Z"' in label.model_dump_json()
    assert RawLabel.model_validate_json(label.model_dump_json()) == label


def test_dead_letter_keeps_original_bytes() -> None:
    raw = b"\xff\xfe not utf-8 {"
    dl = DeadLetter(
        original_b64=DeadLetter.encode_original(raw),
        reason=DlqReason.UNPARSEABLE,
        detail="not UTF-8",
        source="kafka",
        source_topic=EVENTS.name,
        source_partition=0,
        source_offset=7,
        kind="event",
        received_at=datetime.now(UTC),
    )
    again = DeadLetter.model_validate_json(dl.model_dump_json())
    assert again.original() == raw
    assert again.reason is DlqReason.UNPARSEABLE


def test_every_documented_topic_is_declared_once_as_documented() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names))
    rows = re.findall(
        r"^\| `(driftline\.[a-z.]+)` \| (\d+) \| [^|]+ \| (`\w+`(?: or `\w+`)*) \| ([^|]+) \|$",
        README.read_text(),
        re.M,
    )
    documented = {
        name: (int(parts), tuple(re.findall(r"`(\w+)`", models)), retention.strip())
        for name, parts, models, retention in rows
    }
    days = {t.name: t.retention_ms // (24 * 3600 * 1000) for t in ALL_TOPICS}
    declared = {
        t.name: (
            t.partitions,
            tuple(m.__name__ for m in t.value_models),
            "infinite" if t.retention_ms == -1 else f"{days[t.name]} d",
        )
        for t in ALL_TOPICS
    }
    assert documented == declared
    assert MODELS.retention_ms == -1
    assert topic_by_name("driftline.events.valid") is EVENTS_VALID
    with pytest.raises(KeyError, match="known topics"):
        topic_by_name("driftline.nope")


def test_errors_map_to_grpc_and_http() -> None:
    table = {
        errors.InvalidArgumentError: ("INVALID_ARGUMENT", 422, False),
        errors.NotFoundError: ("NOT_FOUND", 404, False),
        errors.UnavailableError: ("UNAVAILABLE", 503, True),
        errors.UnauthenticatedError: ("UNAUTHENTICATED", 401, False),
        errors.DeadlineExceededError: ("DEADLINE_EXCEEDED", 504, True),
    }
    for cls, expected in table.items():
        e = cls("x")
        assert isinstance(e, errors.DriftlineError)
        assert (e.grpc_code, e.http_status, e.retriable) == expected


class _RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, topic: str, **kw: Any) -> asyncio.Future[None]:
        self.sent.append({"topic": topic, **kw})
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_send_model_refuses_the_wrong_model_for_a_topic() -> None:
    producer = _RecordingProducer()
    raw = RawLabel(event_id="e", entity_id="c", timestamp=1, label=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"driftline\.events\.valid carries ValidEvent"):
        await send_model(producer, EVENTS_VALID, "c", raw)  # type: ignore[arg-type]
    assert producer.sent == []


def test_readme_topic_table_matches_the_declarations() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = re.findall(
        r"^\| `(driftline\.[a-z.]+)` \| (\d+) \| [^|]+ \| (`\w+`(?: or `\w+`)*) \|", readme, re.M
    )
    declared = {
        t.name: (t.partitions, tuple(m.__name__ for m in t.value_models)) for t in ALL_TOPICS
    }
    documented = {name: (int(p), tuple(re.findall(r"`(\w+)`", models))) for name, p, models in rows}
    assert documented == declared


def test_a_dead_letter_keeps_the_first_bytes_of_an_oversized_record_and_says_so() -> None:
    raw = b'{"event_id": "e-1", "pad": "' + b"x" * 1_200_000 + b'"}'
    letter = DeadLetter.of(
        raw,
        keep_bytes=64 * 1024,
        reason=DlqReason.TOO_LARGE,
        detail="y" * 10_000,
        source="kafka",
        source_topic=EVENTS.name,
        source_partition=2,
        source_offset=41,
        kind="event",
    )
    assert letter.truncated and letter.original_size == len(raw)
    assert letter.original() == raw[: 64 * 1024]
    assert letter.original_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(letter.detail) <= 2000 and letter.detail.endswith("(10000 chars)")
    # What the dead-letter topic takes: well under Kafka's 1 MiB default.
    assert len(letter.model_dump_json()) < 100 * 1024
    small = DeadLetter.of(
        b"{}", keep_bytes=1024, reason=DlqReason.SCHEMA, detail="d", source="http", kind="label"
    )
    assert (small.truncated, small.original(), small.original_size) == (False, b"{}", 2)


def test_topics_are_created_with_the_message_size_the_producers_use() -> None:
    config = EVENTS.topic_config(KafkaSettings().max_message_bytes)
    assert config["max.message.bytes"] == str(1024 * 1024)
    assert config["retention.ms"] == str(EVENTS.retention_ms)
    assert "max.message.bytes" not in EVENTS.topic_config()
