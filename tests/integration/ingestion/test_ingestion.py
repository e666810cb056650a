"""Ingestion against the real broker and redis-server of the harness.

Records are produced with kcat, a client this project did not write.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from support.records import agrawal_events, collect, kcat_produce

from driftline.contracts.messages import DeadLetter, DlqReason, ValidEvent, ValidLabel
from driftline.contracts.topics import DLQ, EVENTS, EVENTS_VALID, LABELS, LABELS_VALID


def bad_corpus(run: str) -> list[tuple[bytes, DlqReason]]:
    good = agrawal_events(run + "x", 1)[0]

    def variant(**changes: Any) -> bytes:
        doc = json.loads(json.dumps(good))
        doc["event_id"] = f"{run}-bad-{uuid.uuid4().hex[:6]}"
        for k, v in changes.items():
            if k == "features":
                doc["features"].update(v)
            elif v is None:
                doc.pop(k)
            else:
                doc[k] = v
        return json.dumps(doc).encode()

    return [
        (b'{"event_id": "trunc", "entity_id": "c", "times', DlqReason.UNPARSEABLE),
        (b"\xc3\x28\xa0\xa1 not utf-8", DlqReason.UNPARSEABLE),
        (b"42", DlqReason.UNPARSEABLE),
        (variant(features={"age": "forty"}), DlqReason.SCHEMA),
        (variant(entity_id=None), DlqReason.SCHEMA),
        (variant(timestamp="not a time"), DlqReason.SCHEMA),
        (variant(features={"salary": 1e9}), DlqReason.CONSTRAINT),
        (variant(features={"elevel": 7}), DlqReason.CONSTRAINT),
        (variant(featureset="boats"), DlqReason.UNKNOWN_FEATURESET),
        (variant(features={"pad": "z" * 100_000}), DlqReason.TOO_LARGE),
        (variant(features={"salary": float("nan")}), DlqReason.CONSTRAINT),
        (variant(features={"loan": float("inf")}), DlqReason.CONSTRAINT),
    ]


async def test_every_record_sent_with_kcat_is_accounted_for(
    kafka: Any, ingestion_factory: Callable[..., Any]
) -> None:
    run = uuid.uuid4().hex[:8]
    valid = agrawal_events(run, 300)
    dups = [valid[5], valid[17], valid[250]]  # re-sent: the copies must be dead-lettered
    bad = bad_corpus(run)
    ingestion_factory()
    records = [(run, json.dumps(e).encode()) for e in valid + dups] + [(run, b) for b, _ in bad]
    kcat_produce(kafka.bootstrap_servers, EVENTS, records)

    def ours(r: Any) -> bool:
        if r.topic == DLQ.name:
            return r.key is not None and r.key.decode() == run
        return r.key is not None and r.key.decode().startswith(f"{run}-c")

    out = await collect(kafka.bootstrap_servers, [EVENTS_VALID, DLQ], ours, want=len(records))
    valid_out = [
        ValidEvent.model_validate_json(r.value) for r in out if r.topic == EVENTS_VALID.name
    ]
    dead = [DeadLetter.model_validate_json(r.value) for r in out if r.topic == DLQ.name]

    assert len(valid_out) + len(dead) == len(records)
    assert sorted(e.event_id for e in valid_out) == sorted(e["event_id"] for e in valid)
    # By digest: the letter of an oversized record keeps only its first bytes.
    by_digest = {d.original_sha256: d for d in dead}
    for payload, reason in bad:
        letter = by_digest[hashlib.sha256(payload).hexdigest()]
        assert letter.reason is reason, (payload[:80], letter.detail)
        assert payload.startswith(letter.original())
        assert letter.source_topic == EVENTS.name
        assert letter.source_offset is not None
    dup_letters = [d for d in dead if d.reason is DlqReason.DUPLICATE]
    assert sorted(json.loads(d.original())["event_id"] for d in dup_letters) == sorted(
        e["event_id"] for e in dups
    )
    # Valid events keep the producer's values and are keyed by entity.
    first = next(e for e in valid_out if e.event_id == valid[0]["event_id"])
    assert first.features == valid[0]["features"]
    assert first.entity_id == valid[0]["entity_id"]


async def test_labels_flow_and_bad_labels_are_dead_lettered(
    kafka: Any, ingestion_factory: Callable[..., Any]
) -> None:
    run = uuid.uuid4().hex[:8]
    labels = [
        {
            "event_id": f"{run}-e{i}",
            "entity_id": f"{run}-c{i}",
            "timestamp": 1000 + i,
            "label": i % 2,
        }
        for i in range(50)
    ]
    bad = [
        b'{"event_id": "x", "label": 1}',
        b'{"event_id":"y","entity_id":"c","timestamp":1,"label":[1]}',
    ]
    ingestion_factory()
    kcat_produce(
        kafka.bootstrap_servers,
        LABELS,
        [(run, json.dumps(x).encode()) for x in labels] + [(run, b) for b in bad],
    )

    def ours(r: Any) -> bool:
        key = r.key.decode() if r.key else ""
        return key == run if r.topic == DLQ.name else key.startswith(f"{run}-c")

    out = await collect(kafka.bootstrap_servers, [LABELS_VALID, DLQ], ours, want=52)
    got = [ValidLabel.model_validate_json(r.value) for r in out if r.topic == LABELS_VALID.name]
    dead = [DeadLetter.model_validate_json(r.value) for r in out if r.topic == DLQ.name]
    assert sorted((x.event_id, x.label) for x in got) == sorted(
        (x["event_id"], x["label"]) for x in labels
    )
    assert [d.reason for d in dead] == [DlqReason.SCHEMA, DlqReason.SCHEMA]
    assert all(d.kind == "label" for d in dead)


async def test_http_batch_reports_per_record_errors_and_writes_everything(
    kafka: Any, ingestion_factory: Callable[..., Any]
) -> None:
    run = uuid.uuid4().hex[:8]
    svc = ingestion_factory(DRIFTLINE_INGESTION__API_KEY="s3cret")
    events = agrawal_events(run, 20)
    broken = json.loads(json.dumps(events[3]))
    broken["features"]["car"] = 99
    body = [*events, broken, {"what": "ever"}]
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
        denied = await client.post("/v1/events", json=body)
        assert denied.status_code == 401
        assert "X-API-Key" in denied.json()["detail"]
        resp = await client.post("/v1/events", json=body, headers={"X-API-Key": "s3cret"})
        assert resp.status_code == 422
        payload = resp.json()
        assert payload["accepted"] == 20
        assert [(r["index"], r["reason"]) for r in payload["rejected"]] == [
            (20, "constraint"),
            (21, "schema"),
        ]
        assert "car" in payload["rejected"][0]["detail"]
        ok = await client.post(
            "/v1/events", json=agrawal_events(run + "b", 1)[0], headers={"X-API-Key": "s3cret"}
        )
        assert ok.status_code == 200 and ok.json() == {"accepted": 1, "rejected": []}
        garbage = await client.post("/v1/events", content=b"{nope", headers={"X-API-Key": "s3cret"})
        assert garbage.status_code == 422
        assert garbage.json()["rejected"][0]["reason"] == "unparseable"
        metrics = (await client.get("/metrics")).text
        assert (
            "driftline_ingested_records_total"
            '{kind="event",outcome="valid",reason="",via="http"} 21.0' in metrics
        )
        openapi = (await client.get("/openapi.json")).json()
        assert "/v1/events" in openapi["paths"] and "RawEvent" in json.dumps(openapi)

    def ours(r: Any) -> bool:
        if r.topic == DLQ.name:
            d = DeadLetter.model_validate_json(r.value)
            return d.source == "http" and (
                run.encode() in d.original() or d.original() in (b"{nope", b'{"what":"ever"}')
            )
        return r.key is not None and r.key.decode().startswith(run)

    out = await collect(kafka.bootstrap_servers, [EVENTS_VALID, DLQ], ours, want=24)
    assert sum(r.topic == EVENTS_VALID.name for r in out) == 21
    assert sum(r.topic == DLQ.name for r in out) >= 3


async def test_sigkill_mid_stream_neither_loses_nor_duplicates(
    kafka: Any, ingestion_factory: Callable[..., Any]
) -> None:
    run = uuid.uuid4().hex[:8]
    events = agrawal_events(run, 6000, seed=7)
    svc = ingestion_factory()
    half = len(events) // 2
    kcat_produce(
        kafka.bootstrap_servers, EVENTS, [(run, json.dumps(e).encode()) for e in events[:half]]
    )
    await asyncio.sleep(0.5)
    svc.kill()  # most likely in the middle of a transaction
    kcat_produce(
        kafka.bootstrap_servers, EVENTS, [(run, json.dumps(e).encode()) for e in events[half:]]
    )
    ingestion_factory()

    def ours(r: Any) -> bool:
        if r.topic == DLQ.name:
            return r.key is not None and r.key.decode() == run
        return r.key is not None and r.key.decode().startswith(f"{run}-c")

    out = await collect(
        kafka.bootstrap_servers, [EVENTS_VALID, DLQ], ours, want=len(events), timeout=90
    )
    valid = [
        ValidEvent.model_validate_json(r.value).event_id
        for r in out
        if r.topic == EVENTS_VALID.name
    ]
    dead = [DeadLetter.model_validate_json(r.value) for r in out if r.topic == DLQ.name]
    assert dead == [], [d.detail for d in dead[:3]]
    assert len(valid) == len(events)
    assert sorted(valid) == sorted(e["event_id"] for e in events)
