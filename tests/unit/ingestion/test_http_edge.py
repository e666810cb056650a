"""The HTTP edge: splitting bodies, and answering every failure with its reason.

The routes run in-process (no socket) over a producer that fails on demand, for
the failures a real broker cannot be made to show on cue (the integration tests
cover the real broker's refusals).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, RecordTooLargeError
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from support.hostile import event

from driftline.contracts.errors import UnavailableError
from driftline.contracts.messages import DeadLetter, DlqReason
from driftline.contracts.topics import DLQ, EVENTS_VALID
from driftline.ingestion.core import IngestionCore
from driftline.ingestion.dedup import InMemoryDedupStore
from driftline.ingestion.http_api import _split, add_ingest_routes
from driftline.ingestion.writer import FAULT_KEEP_BYTES, OutcomeCounters
from driftline.specs import FeatureSetCatalog, FeatureSetSpec

LOANS_LIKE = FeatureSetSpec.model_validate(
    {
        "name": "loans",
        "version": 1,
        "entity": "customer",
        "fields": {
            name: {"type": "float" if isinstance(value, float) else "int"}
            for name, value in event("e", "c")["features"].items()
        },
        "label": {"type": "binary"},
    }
)


class FlakyProducer:
    """Takes records like a producer; fails the way it is told to, for the topics named."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.refuse: dict[str, Exception] = {}
        """Topic -> error raised by ``send`` (before queueing)."""
        self.fail: dict[str, Exception] = {}
        """Topic -> error the delivery future ends with."""

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[Any]:
        if topic in self.refuse:
            raise self.refuse[topic]
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if topic in self.fail:
            fut.set_exception(self.fail[topic])
        else:
            self.sent.append((topic, value))
            fut.set_result(None)
        return fut

    def letters(self) -> list[DeadLetter]:
        return [DeadLetter.model_validate_json(v) for t, v in self.sent if t == DLQ.name]


class DownDedup(InMemoryDedupStore):
    """Redis unreachable while ``down`` is set."""

    down = False

    async def claim_many(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        if self.down:
            raise UnavailableError("dedup store (Redis) failed: Connection refused")
        return await super().claim_many(claims)


@pytest.fixture
def producer() -> FlakyProducer:
    return FlakyProducer()


@pytest.fixture
def dedup() -> DownDedup:
    return DownDedup(3600)


@pytest.fixture
async def client(producer: FlakyProducer, dedup: DownDedup) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    core = IngestionCore(FeatureSetCatalog([LOANS_LIKE]), dedup, max_record_bytes=4096)
    add_ingest_routes(
        app,
        core,
        producer,  # type: ignore[arg-type]
        OutcomeCounters(CollectorRegistry()),
        None,
        max_body_bytes=64 * 1024,
        max_records=5,
    )
    transport = httpx.ASGITransport(app=app)  # in-process: no socket
    async with httpx.AsyncClient(transport=transport, base_url="http://ingestion") as c:
        yield c


# -- bodies -----------------------------------------------------------------------------


def test_array_elements_keep_their_own_bytes_and_ids() -> None:
    body = b' [ {"event_id": "a",  "x": 1} ,\n[1,2], "s", {"event_id": 7} ] '
    parts = _split(body, 10)
    assert not isinstance(parts, str)
    assert [p.value for p in parts] == [
        b'{"event_id": "a",  "x": 1}',
        b"[1,2]",
        b'"s"',
        b'{"event_id": 7}',
    ]
    assert [p.event_id for p in parts] == ["a", None, None, None]


@pytest.mark.parametrize(
    "body",
    [
        b'{"event_id": "a"}',
        b"[1, 2",
        b"[1, 2] trailing",
        b"[1,,2]",
        b"[" * 50_000,
        b"[" + b"9" * 5000 + b"]",
        b"\xff[1]",
        b"",
    ],
)
def test_anything_but_a_well_formed_array_is_one_record(body: bytes) -> None:
    parts = _split(body, 10)
    assert not isinstance(parts, str) and [p.value for p in parts] == [body]


def test_an_empty_array_holds_no_record() -> None:
    assert _split(b" [ ] ", 10) == []


def test_more_records_than_allowed_is_refused_whole() -> None:
    refusal = _split(json.dumps([{}] * 11).encode(), 10)
    assert isinstance(refusal, str) and "more than 10 records" in refusal
    assert not isinstance(_split(json.dumps([{}] * 10).encode(), 10), str)


# -- answers ----------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_before_it_is_read(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/events", content=b"x" * (64 * 1024 + 1))
    assert resp.status_code == 413
    assert resp.json()["reason"] == "too_large" and resp.json()["limit"] == 64 * 1024
    assert "65537 bytes" in resp.json()["detail"]


async def test_a_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    resp = await client.post("/v1/events", content=chunks())
    assert resp.status_code == 413 and "over 65536 bytes" in resp.json()["detail"]


async def test_too_many_records_is_422_unparseable(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/events", json=[event(f"e{i}", "c") for i in range(6)])
    assert resp.status_code == 422
    assert resp.json() == {
        "reason": "unparseable",
        "detail": resp.json()["detail"],
        "limit": 5,
    }


async def test_a_record_the_producer_refuses_is_rejected_too_large_not_a_500(
    client: httpx.AsyncClient, producer: FlakyProducer
) -> None:
    producer.refuse[EVENTS_VALID.name] = MessageSizeTooLargeError("1200487 bytes")
    resp = await client.post("/v1/events", json=[event("e1", "c"), {"what": "ever"}])
    assert resp.status_code == 422
    assert [(r["index"], r["reason"]) for r in resp.json()["rejected"]] == [
        (0, "too_large"),
        (1, "schema"),
    ]
    assert "refused" in resp.json()["rejected"][0]["detail"]
    refused = next(d for d in producer.letters() if d.reason is DlqReason.TOO_LARGE)
    assert len(refused.original()) <= FAULT_KEEP_BYTES and refused.original_size is not None
    # Its claim was given up: once the producer takes it, the same event is accepted.
    del producer.refuse[EVENTS_VALID.name]
    assert (await client.post("/v1/events", json=event("e1", "c"))).status_code == 200


async def test_a_delivery_the_broker_refuses_is_dead_lettered(
    client: httpx.AsyncClient, producer: FlakyProducer
) -> None:
    producer.fail[EVENTS_VALID.name] = RecordTooLargeError("over max.message.bytes")
    resp = await client.post("/v1/events", json=event("e2", "c"))
    assert resp.status_code == 422
    assert resp.json()["rejected"][0]["reason"] == "too_large"
    assert [d.reason for d in producer.letters()] == [DlqReason.TOO_LARGE]


async def test_kafka_down_is_503_and_a_resend_is_not_a_duplicate(
    client: httpx.AsyncClient, producer: FlakyProducer
) -> None:
    producer.refuse[EVENTS_VALID.name] = KafkaConnectionError("no broker")
    resp = await client.post("/v1/events", json=[event("e3", "c"), event("e4", "c")])
    assert resp.status_code == 503
    assert resp.json()["reason"] == "unavailable"
    assert "Kafka is unavailable" in resp.json()["detail"]
    assert "send it again" in resp.json()["detail"]
    del producer.refuse[EVENTS_VALID.name]
    again = await client.post("/v1/events", json=[event("e3", "c"), event("e4", "c")])
    assert again.status_code == 200 and again.json()["accepted"] == 2


async def test_redis_down_is_503_naming_it(client: httpx.AsyncClient, dedup: DownDedup) -> None:
    dedup.down = True
    resp = await client.post(
        "/v1/labels", json={"event_id": "e", "entity_id": "c", "timestamp": 1, "label": 1}
    )
    assert resp.status_code == 503
    assert "Redis" in resp.json()["detail"] and "nothing of this request" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 3000, "unparseable"),  # under the per-record limit: too deep to parse
        (b"[" * 100_000, None),  # over the body limit
        (
            b'{"event_id": "e", "entity_id": "c", "timestamp": 1, "label": ' + b"7" * 5000 + b"}",
            "too_large",
        ),
        (b"\xff\xfe", "unparseable"),
        (b"", "unparseable"),
    ],
)
async def test_pathological_bodies_get_their_reason(
    client: httpx.AsyncClient, body: bytes, reason: str | None
) -> None:
    resp = await client.post("/v1/labels", content=body)
    if reason is None:
        assert resp.status_code == 413
        return
    assert resp.status_code == 422
    assert resp.json()["rejected"][0]["reason"] == reason
