"""A live loan stream against a :class:`~support.platform.LivePlatform`, and the checks on it.

:class:`LiveStream` produces Agrawal loan applications to ``driftline.events``
(and each one's label, a few events later, to ``driftline.labels``) with aiokafka
at a fixed rate, while a gRPC client asks serving's ``Predict`` for each one.
The checks read what the platform did from its topics and RPCs: every event id
accounted for (valid or dead-lettered), the online aggregates of entities equal
to a brute-force recomputation, the registry's versions and alias history.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from river.datasets import synth
from support.platform import ROOT, LivePlatform

from driftline.contracts.messages import DeadLetter, ValidEvent
from driftline.contracts.topics import DLQ, EVENTS, EVENTS_VALID, LABELS, Topic
from driftline.edge.values import values_to_pb
from driftline.features.columns import column_values
from driftline.specs import FeatureSetSpec, load_featuresets
from driftline.v1 import (
    feature_store_pb2,
    feature_store_pb2_grpc,
    predictor_pb2,
    predictor_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

MODEL = "loans"
SPEC: FeatureSetSpec = load_featuresets(ROOT / "examples" / "featuresets").resolve("loans")
LABEL_LAG = 5
"""A label is sent this many events after its event."""


_RETRYING_CHANNEL = [
    ("grpc.enable_retries", 1),
    (
        "grpc.service_config",
        json.dumps({
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [{
                "name": [{"service": "driftline.v1.Predictor"}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }],
        }),
    ),
]  # fmt: skip
"""A Predict client's channel to several serving replicas (``LiveStream.retry_unavailable``)."""


@dataclass
class LiveStream:
    """Events + labels at ``rate`` per second with a Predict call per event, in the background."""

    platform: LivePlatform
    run: str
    rate: float = 40.0
    entities: int = 30
    concurrency: int = 8
    seed: int = 3
    retry_unavailable: bool = False
    """Predict like a client of replicated serving: round robin over its addresses, and
    gRPC's own retry of a call that failed UNAVAILABLE (on a killed replica)."""
    concept: int = 0
    """Agrawal's classification function of the events sent from now on (0-9): set it to
    change the concept mid-stream."""
    events: list[dict[str, Any]] = field(default_factory=list)
    labels_sent: int = 0
    predict_ok: int = 0
    predict_failed: Counter[str] = field(default_factory=Counter)
    versions_answered: Counter[int] = field(default_factory=Counter)
    sent_at: dict[str, float] = field(default_factory=dict)
    """Event id -> when the broker acknowledged it (``time.monotonic()``)."""
    answered_at: list[tuple[float, float]] = field(default_factory=list)
    """(started, answered) of every Predict that succeeded (``time.monotonic()``)."""
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sent(self) -> int:
        """Events acknowledged by the broker so far."""
        return len(self.events)

    def start(self) -> None:
        """Start producing (returns at once)."""
        self._task = asyncio.create_task(self._produce())

    async def stop(self) -> None:
        """Stop after the event in flight; raise what the producer raised."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def wait_sent(self, more: int, timeout_s: float = 120.0) -> None:
        """Return once ``more`` further events have been acknowledged."""
        target = self.sent + more
        deadline = time.monotonic() + timeout_s
        while self.sent < target:
            if self._task is not None and self._task.done():
                self._task.result()
                raise AssertionError("the stream ended early")
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.sent} of {target} events sent in {timeout_s}s")
            await asyncio.sleep(0.1)

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.platform.kafka.bootstrap_servers,
            client_id=f"chaos-{self.run}",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            # A broker restart must hold sends back, not fail them.
            request_timeout_ms=180_000,
        )
        await producer.start()
        channel = grpc.aio.insecure_channel(
            self.platform.serving_target,
            options=_RETRYING_CHANNEL if self.retry_unavailable else None,
        )
        stub = predictor_pb2_grpc.PredictorStub(channel)
        gate = asyncio.Semaphore(self.concurrency)
        calls: set[asyncio.Task[None]] = set()
        concepts = {
            fn: iter(synth.Agrawal(classification_function=fn, seed=self.seed).take(10**9))
            for fn in range(10)
        }
        base_ms = int(time.time() * 1000)
        pending_labels: list[tuple[dict[str, Any], int]] = []
        t0 = time.monotonic()
        try:
            i = 0
            while not self._stop.is_set():
                due = t0 + i / self.rate
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
                x, y = next(concepts[self.concept])
                event = {
                    "event_id": f"{self.run}-e{i}",
                    "entity_id": f"{self.run}-c{i % self.entities}",
                    "timestamp": base_ms + 10 * i,
                    "featureset": "loans",
                    "features": x,
                }
                fut = await producer.send(
                    EVENTS.name,
                    json.dumps(event).encode(),
                    key=event["entity_id"].encode(),
                )
                await fut
                self.sent_at[event["event_id"]] = time.monotonic()
                self.events.append(event)
                pending_labels.append((event, int(y)))
                if len(pending_labels) > LABEL_LAG:
                    await self._label(producer, *pending_labels.pop(0))
                await gate.acquire()
                call = asyncio.create_task(self._predict(stub, event, gate))
                calls.add(call)
                call.add_done_callback(calls.discard)
                i += 1
            for pending in pending_labels:
                await self._label(producer, *pending)
            if calls:
                await asyncio.gather(*calls)
        finally:
            await producer.stop()
            await channel.close(None)

    async def _label(self, producer: AIOKafkaProducer, event: dict[str, Any], y: int) -> None:
        label = {
            "event_id": event["event_id"],
            "entity_id": event["entity_id"],
            "timestamp": event["timestamp"],
            "label": y,
        }
        await (
            await producer.send(
                LABELS.name, json.dumps(label).encode(), key=event["entity_id"].encode()
            )
        )
        self.labels_sent += 1

    async def _predict(self, stub: Any, event: dict[str, Any], gate: asyncio.Semaphore) -> None:
        started = time.monotonic()
        try:
            response = await stub.Predict(
                predictor_pb2.PredictRequest(
                    entity_id=event["entity_id"],
                    event_id=event["event_id"],
                    model_name=MODEL,
                    features=values_to_pb(event["features"]),
                ),
                timeout=5.0,
            )
            self.predict_ok += 1
            self.versions_answered[int(response.model_version)] += 1
            self.answered_at.append((started, time.monotonic()))
        except grpc.aio.AioRpcError as exc:
            self.predict_failed[exc.code().name] += 1
        finally:
            gate.release()


# -- reading topics -----------------------------------------------------------------------


async def read_topic(bootstrap: str, topic: Topic) -> list[Any]:
    """Every committed record of ``topic`` up to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[Any] = []
        while True:
            positions = {tp: await consumer.position(tp) for tp in parts}
            if all(positions[tp] >= ends[tp] for tp in parts):
                return out
            batch = await consumer.getmany(*parts, timeout_ms=500, max_records=5000)
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()


@dataclass
class Accounting:
    """What became of a run's events: valid and dead-lettered ids (with repeats)."""

    valid: Counter[str]
    dead: dict[str, list[str]]
    """event id -> reasons of its dead letters."""
    valid_events: list[ValidEvent]

    def missing(self, sent: list[str]) -> list[str]:
        """Sent ids neither valid nor dead-lettered."""
        return [e for e in sent if e not in self.valid and e not in self.dead]


async def account(bootstrap: str, prefix: str) -> Accounting:
    """Read ``driftline.events.valid`` and ``driftline.dlq`` for the events of run ``prefix``."""
    valid: Counter[str] = Counter()
    valid_events: list[ValidEvent] = []
    for record in await read_topic(bootstrap, EVENTS_VALID):
        event = ValidEvent.model_validate_json(record.value)
        if event.event_id.startswith(prefix):
            valid[event.event_id] += 1
            valid_events.append(event)
    dead: dict[str, list[str]] = {}
    for record in await read_topic(bootstrap, DLQ):
        letter = DeadLetter.model_validate_json(record.value)
        event_id = _event_id(letter.original())
        if event_id is not None and event_id.startswith(prefix):
            dead.setdefault(event_id, []).append(letter.reason.value)
    return Accounting(valid, dead, valid_events)


async def account_until_complete(
    bootstrap: str, prefix: str, sent: list[str], timeout_s: float = 90.0
) -> Accounting:
    """:func:`account` again until every sent id shows up (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await account(bootstrap, prefix)
        if not result.missing(sent) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(1.0)


def _event_id(raw: bytes) -> str | None:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    value = doc.get("event_id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


# -- the online store ---------------------------------------------------------------------


def expected_online(events: list[ValidEvent]) -> dict[str, dict[str, Any]]:
    """Brute force: raw fields of each entity's newest event, aggregates as of its newest time."""
    by_entity: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for e in events:
        by_entity.setdefault(e.entity_id, []).append((e.event_time.timestamp(), e.features))
    out: dict[str, dict[str, Any]] = {}
    for entity, rows in by_entity.items():
        tmax = max(t for t, _ in rows)
        values: dict[str, Any] = dict([raw for t, raw in rows if t == tmax][-1])
        for agg in SPEC.aggregations:
            end = (math.floor(tmax / agg.hop_s) + 1) * agg.hop_s
            inside = [(t, raw) for t, raw in rows if end - agg.window <= t < end]
            xs = [float(raw[agg.field]) for _, raw in inside] if agg.field else []
            if agg.fn == "count":
                values[agg.name] = len(inside)
            elif agg.fn == "sum":
                values[agg.name] = math.fsum(xs)
            elif agg.fn == "mean":
                values[agg.name] = math.fsum(xs) / len(xs)
            elif agg.fn == "min":
                values[agg.name] = min(xs)
            elif agg.fn == "max":
                values[agg.name] = max(xs)
            elif agg.fn == "last":
                newest = max(t for t, _ in inside)
                values[agg.name] = [raw[agg.field] for t, raw in inside if t == newest][-1]
            else:
                m = math.fsum(xs) / len(xs)
                values[agg.name] = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / len(xs))
        out[entity] = values
    return out


async def online_features(target: str, entity_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``GetOnlineFeatures`` of the loans set: entity -> name -> value (None unless PRESENT)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub: Any = feature_store_pb2_grpc.FeatureStoreStub(channel)
        response = await stub.GetOnlineFeatures(
            feature_store_pb2.GetOnlineFeaturesRequest(featureset="loans", entity_ids=entity_ids),
            timeout=10.0,
        )
    out: dict[str, dict[str, Any]] = {entity: {} for entity in response.entity_ids}
    for column in response.features:
        for entity, value in zip(response.entity_ids, column_values(column), strict=True):
            out[entity][column.name] = value
    return out


def differences(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> list[str]:
    """Human-readable mismatches between online values and the brute-force ones."""
    problems = []
    for entity, values in want.items():
        row = got.get(entity, {})
        for name, expected in values.items():
            actual = row.get(name)
            if isinstance(expected, float) and isinstance(actual, int | float):
                same = math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-6)
            else:
                same = actual == expected
            if not same:
                problems.append(f"{entity}.{name}: online {actual!r}, recomputed {expected!r}")
    return problems


async def converged_online(
    target: str, want: dict[str, dict[str, Any]], timeout_s: float = 90.0
) -> list[str]:
    """Poll ``GetOnlineFeatures`` until it equals ``want``; the remaining differences."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            problems = differences(await online_features(target, sorted(want)), want)
        except grpc.aio.AioRpcError as exc:
            problems = [f"GetOnlineFeatures failed: {exc.code().name}: {exc.details()}"]
        if not problems or time.monotonic() > deadline:
            return problems
        await asyncio.sleep(0.5)


# -- the registry and serving ---------------------------------------------------------------


@dataclass(frozen=True)
class RegistryView:
    """What ``ListVersions`` and ``GetAliasHistory`` say about the model."""

    versions: tuple[tuple[int, str], ...]
    """(version, sha256), oldest first."""
    history: tuple[tuple[str, str, int, int], ...]
    """(event id, alias, kind, version) of every alias change, oldest first."""

    def champion(self) -> int | None:
        """The version ``champion`` points at now."""
        current = None
        for _, alias, _, version in self.history:
            if alias == "champion":
                current = version or None
        return current

    def extends(self, earlier: RegistryView) -> bool:
        """Whether this view holds everything ``earlier`` held, in the same order."""
        n, m = len(earlier.versions), len(earlier.history)
        return self.versions[:n] == earlier.versions and self.history[:m] == earlier.history


async def registry_view(target: str, timeout_s: float = 60.0) -> RegistryView:
    """Read the loans model's versions and alias history (waiting while it is UNAVAILABLE)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await _registry_view(target)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def _registry_view(target: str) -> RegistryView:
    async with grpc.aio.insecure_channel(target) as channel:
        stub: Any = registry_pb2_grpc.RegistryStub(channel)
        versions: list[tuple[int, str]] = []
        token = ""
        while True:
            page = await stub.ListVersions(
                registry_pb2.ListVersionsRequest(name=MODEL, page_size=100, page_token=token),
                timeout=10.0,
            )
            versions += [(int(v.version), v.sha256) for v in page.versions]
            token = page.next_page_token
            if not token:
                break
        history = await stub.GetAliasHistory(
            registry_pb2.GetAliasHistoryRequest(name=MODEL), timeout=10.0
        )
    return RegistryView(
        tuple(sorted(versions)),
        tuple(
            (c.event_id, c.alias, int(c.kind), int(c.version) if c.HasField("version") else 0)
            for c in history.changes
        ),
    )


async def wait_champion(target: str, timeout_s: float = 150.0) -> RegistryView:
    """Poll the registry until the model has a champion."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            view = await registry_view(target)
            if view.champion() is not None:
                return view
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"no champion of {MODEL!r} within {timeout_s}s")
        await asyncio.sleep(0.5)


async def predict_once(target: str, entity_id: str, timeout_s: float = 5.0) -> Any:
    """One Predict for ``entity_id`` with only online features; raises the RPC error."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub: Any = predictor_pb2_grpc.PredictorStub(channel)
        return await stub.Predict(
            predictor_pb2.PredictRequest(entity_id=entity_id, model_name=MODEL), timeout=timeout_s
        )


async def serving_answers(target: str, entity_id: str, timeout_s: float = 60.0) -> Any:
    """Poll Predict until it answers; the response (AssertionError with the last error)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await predict_once(target, entity_id)
        except grpc.aio.AioRpcError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"serving did not answer within {timeout_s}s: "
                    f"{exc.code().name}: {exc.details()}"
                ) from exc
        await asyncio.sleep(0.5)


# -- the outcome of a stream -------------------------------------------------------------


async def check_stream_outcome(platform: LivePlatform, stream: LiveStream) -> None:
    """Every event sent is on driftline.events.valid exactly once (none dead-lettered), and
    the online aggregates of ten entities equal a brute-force recomputation."""
    sent = [e["event_id"] for e in stream.events]
    books = await account_until_complete(platform.kafka.bootstrap_servers, f"{stream.run}-", sent)
    missing = books.missing(sent)
    assert not missing, f"{len(missing)} of {len(sent)} events lost, e.g. {missing[:5]}\n" + (
        platform.logs()
    )
    twice = {e: n for e, n in books.valid.items() if n > 1}
    if twice:
        raw = Counter(
            eid
            for r in await read_topic(platform.kafka.bootstrap_servers, EVENTS)
            if (eid := _event_id(r.value)) in twice
        )
        where = [
            (e.event_id, e.ingested_at.isoformat()) for e in books.valid_events
            if e.event_id in twice
        ]  # fmt: skip
        raise AssertionError(
            f"events written to driftline.events.valid more than once: {twice}; copies on "
            f"driftline.events (as produced): {dict(raw)}; valid copies ingested at {where}"
        )
    assert not books.dead, f"valid events were dead-lettered: {dict(list(books.dead.items())[:5])}"
    assert set(books.valid) == set(sent)

    sample = sorted({e.entity_id for e in books.valid_events})
    sample = random.Random(0).sample(sample, min(10, len(sample)))
    want = expected_online([e for e in books.valid_events if e.entity_id in sample])
    problems = await converged_online(platform.features_target, want)
    assert not problems, "online aggregates differ from the recomputation:\n" + "\n".join(
        problems[:20]
    )
