"""The retraining loop as one trace, across the real service processes, received over OTLP.

``driftline demo`` runs as a subprocess (six services of its own, against a
broker and a redis-server of this module's) with every process exporting its
spans to an OTLP/gRPC receiver run in this test.  Once the loop closed, the
spans must hold it as one trace: drift detected (monitoring) → retrain request →
training's attempt → its candidate → the registration and the promotion (the
registry's RPCs and their ``driftline.models`` records) → serving's swap → the new
champion's first prediction, linked to that request's own trace, which the demo's
producer started for the event (demo → ingestion → features → serving).
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from support.own_infra import own_kafka_node, own_redis_node, read_topic

from driftline.contracts.messages import RegistryEvent, RegistryEventKind, RetrainRequest
from driftline.contracts.topics import (
    EVENTS,
    EVENTS_VALID,
    LABELS,
    LABELS_VALID,
    MODELS,
    RETRAIN,
)
from driftline.devtools.demo_env import isolated_env
from driftline.devtools.infra import KafkaNode, RedisNode
from driftline.telemetry import HEAD_SAMPLED
from driftline.telemetry.loop import DRIFT_ID, MODEL_VERSION, RETRAIN_ID, TRIGGER_ID

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaNode]:
    """A real broker holding nothing but this module's records."""
    with own_kafka_node(tmp_path_factory.mktemp("loop-trace-kafka")) as node:
        yield node


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisNode]:
    """A real redis-server with no other test's entities in it."""
    with own_redis_node(tmp_path_factory.mktemp("loop-trace-redis")) as node:
        yield node


@pytest.fixture
async def otlp() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    async with otlp_receiver() as received:
        yield received


async def _run_demo(env: dict[str, str], report: Path, logs: Path) -> None:
    """``driftline demo`` (no ops stack: the spans go to this test's receiver)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "driftline.cli", "demo",
        "--events", "6000", "--rate", "100", "--drift-at", "3000", "--label-delay", "50",
        "--seed", "7", "--timeout", "600", "--no-ops", "--report", str(report),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 840)
    except TimeoutError:
        proc.kill()
        raise
    if proc.returncode != 0:
        tails = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(logs.glob("*.log"))
        )
        raise AssertionError(f"the demo failed:\n{out.decode(errors='replace')}\n{tails}")


def _one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.span.name == name]
    assert len(found) == 1, f"{len(found)} spans {service}:{name}: {[s.span_id for s in found]}"
    return found[0]


def _services(spans: list[ReceivedSpan]) -> set[str]:
    return {s.service for s in spans}


async def test_the_loop_is_one_trace_from_drift_to_the_new_champions_first_answer(
    own_kafka: KafkaNode, own_redis: RedisNode, otlp: tuple[OtlpReceiver, str], tmp_path: Path
) -> None:
    receiver, endpoint = otlp
    state = tmp_path / "state"
    env = isolated_env(
        bootstrap_servers=own_kafka.bootstrap_servers,
        redis_host=own_redis.host,
        redis_port=own_redis.port,
        state_dir=state,
    )
    # Every process (the demo's producer too) exports here, within a fraction of a second.
    env.update(DRIFTLINE_TELEMETRY__OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="200")
    await _run_demo(env, tmp_path / "report.md", state / "logs")

    bootstrap = own_kafka.bootstrap_servers
    [request] = [
        RetrainRequest.model_validate_json(v) for v in await read_topic(bootstrap, RETRAIN, "t")
    ]
    models = [
        RegistryEvent.model_validate_json(v) for v in await read_topic(bootstrap, MODELS, "t")
    ]
    [registered] = [
        e
        for e in models
        if e.kind is RegistryEventKind.REGISTERED
        and e.lineage is not None
        and e.lineage.trigger_id == request.request_id
    ]
    version = registered.version

    # -- monitoring: the detection starts the trace; the request continues it -----------
    [requested] = [
        s
        for s in receiver.spans
        if s.span.name == f"{RETRAIN.name} publish"
        and s.attribute(RETRAIN_ID) == request.request_id
    ]
    assert requested.service == "monitoring"
    loop = receiver.in_trace(requested.trace_id)
    by_id = {s.span_id: s for s in loop}
    detected = by_id[requested.parent_id]
    assert (detected.service, detected.span.name) == ("monitoring", "driftline.drift publish")
    assert detected.attribute(DRIFT_ID) in request.drift_ids
    assert detected.parent_id == ""  # the root of the loop's trace …
    # … linked to the traces of the records behind the detection (the demo traced them all)
    upstream = {link.trace_id.hex() for link in detected.span.links}
    assert upstream, "the detection links to no trace of the records that caused it"
    data_path = [s for tid in upstream for s in receiver.in_trace(tid)]
    assert {"demo", "ingestion", "features"} <= _services(data_path)

    # -- training: the attempt, the candidate, its registration and promotion -----------
    attempts = [s for s in loop if s.span.name == f"{RETRAIN.name} process"]
    assert attempts and all(a.service == "training" for a in attempts)
    assert all(a.parent_id == requested.span_id for a in attempts)
    assert all(a.attribute(RETRAIN_ID) == request.request_id for a in attempts)
    candidate = _one(loop, "training", "candidate loans")
    assert candidate.parent_id in {a.span_id for a in attempts}
    assert candidate.attribute(RETRAIN_ID) == request.request_id
    assert candidate.attribute(MODEL_VERSION) == version
    register = _one(loop, "registry", "driftline.v1.Registry/RegisterVersion")
    assert register.parent_id == candidate.span_id
    assert register.span.kind == Span.SPAN_KIND_SERVER
    promote = _one(loop, "training", "promote loans")
    assert promote.parent_id == candidate.span_id
    assert promote.attribute(MODEL_VERSION) == version
    set_alias = _one(loop, "registry", "driftline.v1.Registry/SetAlias")
    assert set_alias.parent_id == promote.span_id

    # -- the registry's records, and serving following them ------------------------------
    published = [s for s in loop if s.span.name == f"{MODELS.name} publish"]
    by_kind = {s.attribute("driftline.registry.event"): s for s in published}
    assert by_kind["registered"].parent_id == register.span_id
    promoted = by_kind["alias_set"]
    assert promoted.parent_id == set_alias.span_id
    assert promoted.attribute(TRIGGER_ID) == request.request_id
    applied = [
        s for s in loop if s.service == "serving" and s.span.name == f"{MODELS.name} process"
    ]
    [swap] = [s for s in applied if s.parent_id == promoted.span_id]
    assert swap.span.kind == Span.SPAN_KIND_CONSUMER
    assert swap.attribute(MODEL_VERSION) == version
    assert any(s.parent_id == by_kind["registered"].span_id for s in applied)  # the prefetch

    # -- the new champion's first answer, in the loop's trace and linked to its request ---
    first = _one(loop, "serving", f"first prediction loans v{version}")
    assert first.parent_id == swap.span_id
    [link] = first.span.links
    answered = [
        s for s in receiver.in_trace(link.trace_id.hex()) if s.span_id == link.span_id.hex()
    ]
    assert [(s.service, s.span.name) for s in answered] == [
        ("serving", "driftline.v1.Predictor/Predict")
    ]
    assert _services(loop) == {"monitoring", "training", "registry", "serving"}
    # The loop with what it links to holds the data path: spans of at least five services.
    linked = data_path + receiver.in_trace(link.trace_id.hex())
    assert len(_services(loop) | _services(linked)) >= 5

    # -- the demo's producer traces an event as an instrumented one would ----------------
    # (a trace of an event it sent and asked a prediction for: demo → ingestion →
    # features, and the Predict call in the same trace)
    sent = [
        s for s in receiver.spans if s.service == "demo" and s.span.name == f"{EVENTS.name} publish"
    ]
    assert len(sent) >= 5000  # every scenario event (all sampled: sample_ratio is 1)
    traces: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for s in receiver.spans:
        traces[s.trace_id].append(s)
    event_trace = next(
        t
        for t in (traces[s.trace_id] for s in sent)
        if any(s.service == "serving" and s.span.kind == Span.SPAN_KIND_SERVER for s in t)
    )
    producer = _one(event_trace, "demo", f"{EVENTS.name} publish")
    assert producer.parent_id == "" and producer.span.kind == Span.SPAN_KIND_PRODUCER
    validated = {
        s.attribute("messaging.destination.name"): s
        for s in event_trace
        if (s.service, s.span.name) == ("ingestion", "ingestion.validate")
    }
    assert set(validated) == {EVENTS_VALID.name, LABELS_VALID.name}
    validate = validated[EVENTS_VALID.name]
    assert validate.parent_id == producer.span_id
    assert validate.attribute(HEAD_SAMPLED) is None  # continued, not started here
    # the label went on in its event's trace, through ingestion too
    label = _one(event_trace, "demo", f"{LABELS.name} publish")
    assert label.parent_id == producer.span_id
    assert validated[LABELS_VALID.name].parent_id == label.span_id
    process = _one(event_trace, "features", f"{EVENTS_VALID.name} process")
    spans_by_id = {s.span_id: s for s in event_trace}
    assert producer in _ancestors(process, spans_by_id)
    client = _one(event_trace, "demo", "driftline.v1.Predictor/Predict")
    assert client.parent_id == producer.span_id and client.span.kind == Span.SPAN_KIND_CLIENT
    server = _one(event_trace, "serving", "driftline.v1.Predictor/Predict")
    assert server.parent_id == client.span_id


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    out: list[ReceivedSpan] = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        out.append(span)
    return out
