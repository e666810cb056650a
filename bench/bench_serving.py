"""Serving benchmark: Predict with feature fetch, throughput, ModelInfer rows/s, vs a bare echo.

Runs, each in its own process on loopback: a real Kafka broker (predictions are
logged to it), redis-server, the real features service (``python -m
driftline.features``: Predict's feature fetch goes through it and Redis, with
online values for 1,000 entities of the loans feature set), the real registry
service (``python -m driftline.registry``, one signed champion registered over
its RPCs: a Hoeffding tree trained on Agrawal; the registry is not on the
request path),
a bare ``grpc.aio`` echo server (the baseline, measured in the same run), and
``python -m driftline.serving``. Writes ``bench/out/serving.json``.

The services run on uvloop (their default); the echo baseline is the plain
asyncio echo the issue names. The same echo on uvloop is measured too, so the
report shows how much of the ratio the event loop accounts for. Floors are
measured beside Predict: a relay asking the echo (two bare hops), with a call
or with a message on a long-lived stream, and a relay that does nothing but
Predict's feature fetch from the real features service (serving's own client,
reading on its stream, and with a call per read). A second serving, reading
features with a ``GetOnlineFeatures`` call per read
(``serving.feature_reads=unary``), is measured beside the first at
concurrency 1. The concurrency-1 targets take turns, round by round.

    uv run python bench/bench_serving.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "serving.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_platform import (  # noqa: E402 - bench/ holds the helpers
    Caller,
    serving_stack_env,
    stop_processes,
    wait_ready,
)
from measure import cpu_seconds, pct  # noqa: E402 - bench/ holds the helpers

from driftline.security import grpc_tls, http_tls  # noqa: E402
from driftline.security.redis_auth import RedisAuth  # noqa: E402
from driftline.settings import SecuritySettings, load_settings  # noqa: E402

SECURITY = load_settings().security
"""The bench's clients and stand-in servers: plaintext, like the figures, unless the
environment (``DRIFTLINE_SECURITY__ENABLED``, ...) turns secure mode on for the run."""
ADMIN = Caller(SECURITY, "admin")
"""The bench's own client: ``admin``, which needs no API key in secure mode."""

SIGNING_KEY = "bench-signing-key"
MODEL = "loans-risk"
ENTITIES = 1000


class CpuMeter:
    """CPU microseconds a server process spends per unit of work during a phase.

    Wall-clock latency depends on everything else the machine runs; the server's
    own CPU time per request does not, so it is reported next to each phase.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = cpu_seconds(pid)

    def per(self, units: float) -> float:
        return round((cpu_seconds(self.pid) - self.start) / max(units, 1) * 1e6, 1)


# -- the peer processes ------------------------------------------------------------------


def _same(message: bytes) -> bytes:
    return message


async def _echo_stream(requests: Any, context: Any) -> Any:
    async for message in requests:
        yield message


ECHO_STREAM = "/bench.Echo/Stream"
"""A bidirectional stream on the echo servers that answers each message with itself."""


async def _serve(add: Callable[[Any, grpc.aio.Server], None], servicer: Any, port: int) -> None:
    """Serve ``servicer`` (added by its generated ``add_…_to_server``) on loopback ``port``,
    beside :data:`ECHO_STREAM`."""
    server = grpc.aio.server()
    add(servicer, server)
    stream = grpc.stream_stream_rpc_method_handler(_echo_stream, _same, _same)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {"Stream": stream}),)
    )
    grpc_tls.add_port(server, f"127.0.0.1:{port}", SECURITY, "serving")
    await server.start()
    await server.wait_for_termination()


async def run_echo(port: int) -> None:
    """A bare Predictor that answers an empty response: the gRPC round-trip floor."""
    from driftline.v1 import predictor_pb2, predictor_pb2_grpc

    class Echo(predictor_pb2_grpc.PredictorServicer):
        async def Predict(self, request: Any, context: Any) -> Any:
            return predictor_pb2.PredictResponse(request_id=request.request_id)

    await _serve(predictor_pb2_grpc.add_PredictorServicer_to_server, Echo(), port)


async def run_relay(port: int, echo_port: int) -> None:
    """A Predictor that asks the echo over one persistent channel, then answers (on uvloop).

    The floor under any service that makes one gRPC call per request, as
    Predict's feature fetch does: two hops and nothing else.
    """
    import uvloop

    from driftline.v1 import predictor_pb2, predictor_pb2_grpc

    uvloop.install()
    channel = grpc_tls.channel(f"127.0.0.1:{echo_port}", SECURITY, "admin")
    stub = predictor_pb2_grpc.PredictorStub(channel)

    class Relay(predictor_pb2_grpc.PredictorServicer):
        async def Predict(self, request: Any, context: Any) -> Any:
            answer = await stub.Predict(request, timeout=1)
            return predictor_pb2.PredictResponse(request_id=answer.request_id)

    await _serve(predictor_pb2_grpc.add_PredictorServicer_to_server, Relay(), port)


async def run_stream_relay(port: int, echo_port: int) -> None:
    """The relay, asking the echo with one message each way on one long-lived stream.

    The floor under the same hop made as serving makes its feature reads.
    """
    import uvloop

    from driftline.v1 import predictor_pb2, predictor_pb2_grpc

    uvloop.install()
    channel = grpc_tls.channel(f"127.0.0.1:{echo_port}", SECURITY, "admin")
    call: Any = None
    lock = asyncio.Lock()

    class StreamRelay(predictor_pb2_grpc.PredictorServicer):
        async def Predict(self, request: Any, context: Any) -> Any:
            nonlocal call
            async with lock:  # one message in flight: concurrency 1 is all it is used at
                if call is None:
                    call = channel.stream_stream(ECHO_STREAM, _same, _same)()
                await call.write(request.SerializeToString())
                answer = predictor_pb2.PredictRequest.FromString(await call.read())
            return predictor_pb2.PredictResponse(request_id=answer.request_id)

    await _serve(predictor_pb2_grpc.add_PredictorServicer_to_server, StreamRelay(), port)


async def run_fetch_relay(port: int, features_port: int, reads: str) -> None:
    """A Predictor that reads the entity's features from the real features service, then
    answers an empty response (on uvloop).

    The floor under Predict itself: the one feature fetch the issue requires
    (the same 9 features, over one persistent channel, made by serving's own
    client with ``reads``: ``stream`` or ``unary``) and nothing else: no model,
    no merge, no spans, no prediction log, no response content.
    """
    import uvloop

    from driftline.serving.feature_transport import GrpcFeatureSource
    from driftline.v1 import predictor_pb2, predictor_pb2_grpc

    uvloop.install()
    target = f"127.0.0.1:{features_port}"
    source = GrpcFeatureSource(
        grpc_tls.channel(target, SECURITY, "admin"), target, stream=reads == "stream"
    )

    class FetchRelay(predictor_pb2_grpc.PredictorServicer):
        async def Predict(self, request: Any, context: Any) -> Any:
            await source.online("loans", [request.entity_id], AGRAWAL_FIELDS, 1.0)
            return predictor_pb2.PredictResponse(request_id=request.request_id)

    await _serve(predictor_pb2_grpc.add_PredictorServicer_to_server, FetchRelay(), port)


async def run_echo_uvloop(port: int) -> None:
    """The same echo on uvloop, the event loop the services run on."""
    import uvloop

    uvloop.install()
    await run_echo(port)


AGRAWAL_FIELDS = (
    "salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan",
)  # fmt: skip
"""The champion's inputs: the loans feature set's raw fields."""


async def register_champion(
    registry_target: str, security: SecuritySettings | None = SECURITY
) -> int:
    """Register one signed champion on the real registry service; its version.

    A Hoeffding tree trained on Agrawal, uploaded and promoted over the
    registry's own RPCs (as training does), which serving then loads, verifies
    and follows on ``driftline.models``.
    """
    from river import tree
    from river.datasets import synth

    from driftline.registry_client import RegistryClient

    model = tree.HoeffdingTreeClassifier(grace_period=100)
    for x, y in synth.Agrawal(seed=1).take(5000):
        model.learn_one(x, y)
    spec = {"featureset": "loans", "task": "binary", "features": list(AGRAWAL_FIELDS)}
    async with RegistryClient(registry_target, security=security, identity="admin") as registry:
        version = await registry.register(MODEL, model=model, spec=spec, actor="bench")
        await registry.set_alias(
            MODEL, "champion", version.version, actor="bench", reason="serving bench"
        )
    return version.version


async def fill_online_store(
    redis_url: str, auth: RedisAuth | None = None, *, cluster: bool = False
) -> None:
    """Online values of all 16 loans features for ``ENTITIES`` entities, as the worker writes
    (``auth``: the login to a secure redis-server; ``cluster``: ``redis_url`` is a node of a
    Redis Cluster)."""
    from river.datasets import synth

    from driftline.online_store import EntityWrite
    from driftline.online_store.redis_store import RedisOnlineStore
    from driftline.specs import load_featuresets

    spec = load_featuresets(ROOT / "examples" / "featuresets").resolve("loans")
    now_us = int(time.time() * 1e6)
    writes = []
    for i, (x, _) in enumerate(synth.Agrawal(seed=2).take(ENTITIES)):
        values: dict[str, tuple[Any, int]] = {n: (v, now_us) for n, v in x.items()}
        for name in spec.feature_names:
            values.setdefault(name, (float(i % 7), now_us))  # the aggregates
        writes.append(EntityWrite(f"bench-{i}", values))
    store = RedisOnlineStore(redis_url, auth=auth, cluster=cluster)
    try:
        await store.write("loans", writes)
    finally:
        await store.close()


async def start_serving_stack(
    servings: dict[str, dict[str, str]],
    log: Path,
    out: IO[bytes],
    procs: list[subprocess.Popen[bytes]],
    security: SecuritySettings | None = SECURITY,
) -> tuple[int, dict[str, subprocess.Popen[bytes]]]:
    """Start the registry and the features service (in the first environment of
    ``servings``), register the champion (as ``admin`` under ``security``), then one serving
    per entry of ``servings`` (name: its environment) and wait until each is ready.

    Returns the champion's version and the serving processes by name. Each process is
    appended to ``procs`` as it starts, so the caller's ``finally`` stops whatever did
    start when a later one fails.
    """
    env = next(iter(servings.values()))

    def start(module: str, environ: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", module], env=environ, stdout=out, stderr=out)
        procs.append(proc)
        return proc

    registry = start("driftline.registry", env)
    features = start("driftline.features", env)
    wait_ready(int(env["DRIFTLINE_REGISTRY__ADMIN__PORT"]), registry, log, "registry", security)
    champion = await register_champion(env["DRIFTLINE_SERVING__REGISTRY_TARGET"], security)
    # Serving asks the feature store for the feature types as soon as the
    # registry answers: the feature store first.
    wait_ready(int(env["DRIFTLINE_FEATURES__ADMIN__PORT"]), features, log, "features", security)
    started = {name: start("driftline.serving", environ) for name, environ in servings.items()}
    for name, proc in started.items():
        port = int(servings[name]["DRIFTLINE_SERVING__ADMIN__PORT"])
        wait_ready(port, proc, log, name, security)
    return champion, started


# -- the load ----------------------------------------------------------------------------


async def latency(
    targets: dict[str, tuple[str, int]],
    n: int,
    rounds: int = 5,
    callers: dict[str, Caller] | None = None,
) -> dict[str, dict[str, float]]:
    """Sequential Predicts (concurrency 1) to each of ``targets`` (name: address, server pid).

    The targets take turns, ``n / rounds`` requests each per round, so that a
    slow spell of the shared machine falls on all of them alike rather than on
    whichever was measured then: the ratios between them are what the bench
    reports. ``callers``: who calls each target (default :data:`ADMIN`).
    """
    from driftline.v1 import predictor_pb2, predictor_pb2_grpc

    reqs = [
        predictor_pb2.PredictRequest(entity_id=f"bench-{i % ENTITIES}", model_name=MODEL)
        for i in range(n)
    ]
    per_round = max(1, n // rounds)
    who = {name: (callers or {}).get(name, ADMIN) for name in targets}
    channels = {name: who[name].channel(addr) for name, (addr, _) in targets.items()}
    lat: dict[str, list[float]] = {name: [] for name in targets}
    cpu_s: dict[str, float] = dict.fromkeys(targets, 0.0)
    try:
        stubs = {name: predictor_pb2_grpc.PredictorStub(ch) for name, ch in channels.items()}
        for name, stub in stubs.items():
            for r in reqs[:200]:
                await stub.Predict(r, timeout=5, metadata=who[name].call_metadata)
        for k in range(rounds):
            batch = reqs[k * per_round : (k + 1) * per_round]
            for name, stub in stubs.items():
                pid = targets[name][1]
                before = cpu_seconds(pid)
                times = lat[name]
                metadata = who[name].call_metadata
                for r in batch:
                    t = time.perf_counter()
                    await stub.Predict(r, timeout=5, metadata=metadata)
                    times.append(time.perf_counter() - t)
                cpu_s[name] += cpu_seconds(pid) - before
    finally:
        for ch in channels.values():
            await ch.close(None)
    return {
        name: {
            "requests": len(times),
            "p50_ms": round(statistics.median(times) * 1000, 3),
            "p99_ms": round(pct(times, 0.99) * 1000, 3),
            "server_cpu_us_per_request": round(cpu_s[name] / len(times) * 1e6, 1),
        }
        for name, times in lat.items()
    }


async def throughput(
    target: str, concurrency: int, seconds: float, server_pid: int, caller: Caller = ADMIN
) -> dict[str, Any]:
    """``concurrency`` clients on one channel sending Predicts for ``seconds`` (as ``caller``)."""
    from driftline.v1 import predictor_pb2, predictor_pb2_grpc

    lat: list[float] = []
    errors: dict[str, int] = {}
    async with caller.channel(target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        end = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < end:
                r = predictor_pb2.PredictRequest(
                    entity_id=f"bench-{i % ENTITIES}", model_name=MODEL
                )
                t = time.perf_counter()
                try:
                    await stub.Predict(r, timeout=5, metadata=caller.call_metadata)
                except grpc.aio.AioRpcError as exc:
                    what = f"{exc.code().name}: {exc.details()}"
                    errors[what] = errors.get(what, 0) + 1
                lat.append(time.perf_counter() - t)
                i += concurrency

        started = time.perf_counter()
        cpu = CpuMeter(server_pid)
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(statistics.median(lat) * 1000, 3),
        "p99_ms": round(pct(lat, 0.99) * 1000, 3),
        "errors": sum(errors.values()),
        "errors_by_status": errors,
        "server_cpu_us_per_request": cpu.per(len(lat)),
    }


async def infer_rows(
    target: str, rows_per_request: int, seconds: float, server_pid: int
) -> dict[str, float]:
    """Sequential ModelInfer calls with raw inputs of ``rows_per_request`` rows."""
    from river.datasets import synth

    from driftline.serving.tensor_codec import encode_raw
    from inference import grpc_service_pb2 as oip
    from inference import grpc_service_pb2_grpc as oip_grpc

    rows = [x for x, _ in synth.Agrawal(seed=3).take(rows_per_request)]
    request = oip.ModelInferRequest(model_name=MODEL)
    for name in rows[0]:
        dt = "INT64" if isinstance(rows[0][name], int) else "FP64"
        request.inputs.add(name=name, datatype=dt, shape=[rows_per_request, 1])
        request.raw_input_contents.append(encode_raw(dt, [r[name] for r in rows]))
    lat = []
    async with grpc_tls.channel(target, SECURITY, "admin") as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(5):
            await stub.ModelInfer(request, timeout=10)
        end = time.perf_counter() + seconds
        started = time.perf_counter()
        cpu = CpuMeter(server_pid)
        while time.perf_counter() < end:
            t = time.perf_counter()
            await stub.ModelInfer(request, timeout=10)
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
    return {
        "rows_per_request": rows_per_request,
        "requests": len(lat),
        "rows_per_s": round(len(lat) * rows_per_request / elapsed, 1),
        "p50_ms": round(statistics.median(lat) * 1000, 3),
        "p99_ms": round(pct(lat, 0.99) * 1000, 3),
        "server_cpu_us_per_row": cpu.per(len(lat) * rows_per_request),
    }


def _metric(admin_port: int, prefix: str) -> float:
    url = http_tls.url("127.0.0.1", admin_port, SECURITY, "/metrics")
    context = http_tls.client_context(SECURITY, "admin")
    with urllib.request.urlopen(url, timeout=5, context=context) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def _log_counts(admin_port: int) -> dict[str, float]:
    """Serving's prediction-log figures so far, in rows (and Kafka records written)."""
    return {
        # Predict counts one, ModelInfer its rows: what the log should hold.
        "rows_answered": _metric(admin_port, "driftline_serving_predictions_total"),
        "rows_written": _metric(
            admin_port, 'driftline_serving_prediction_log_written_total{kind="answered"}'
        ),
        "rows_dropped": _metric(admin_port, "driftline_serving_prediction_log_dropped_total"),
        "records_written": _metric(
            admin_port, 'driftline_messages_out_total{topic="driftline.predictions"}'
        ),
    }


async def _logged(admin_port: int, timeout_s: float = 30.0) -> dict[str, float]:
    """:func:`_log_counts` once every answered row is written or counted as dropped."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = _log_counts(admin_port)
        done = counts["rows_written"] + counts["rows_dropped"] >= counts["rows_answered"]
        if done or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)


def _phase(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


async def measure(args: argparse.Namespace, bootstrap: str, redis_port: int) -> dict[str, Any]:
    from driftline.devtools.infra import free_ports

    ports = free_ports(15)
    echo_port, uv_echo_port, relay_port, stream_relay_port, fetch_port, fetch_unary_port = ports[:6]
    reg_port, reg_admin, fs_port, fs_admin, grpc_port, admin_port = ports[6:12]
    unary_grpc_port, unary_admin_port = ports[12:14]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    artifacts = Path(tempfile.mkdtemp(prefix="driftline-bench-artifacts-"))
    log = OUT.parent / "serving-bench.log"
    out = log.open("wb")
    me = [sys.executable, str(Path(__file__).resolve())]
    await fill_online_store(f"redis://127.0.0.1:{redis_port}/0")
    peers = {
        "echo": ["--role", "echo", "--port", str(echo_port)],
        "echo_uvloop": ["--role", "echo-uvloop", "--port", str(uv_echo_port)],
        "relay": ["--role", "relay", "--port", str(relay_port), "--port2", str(uv_echo_port)],
        "stream_relay": [
            *("--role", "stream-relay", "--port", str(stream_relay_port)),
            *("--port2", str(uv_echo_port)),
        ],
        "fetch_relay": [
            *("--role", "fetch-relay", "--port", str(fetch_port), "--port2", str(fs_port)),
            *("--reads", "stream"),
        ],
        "fetch_relay_unary": [
            *("--role", "fetch-relay", "--port", str(fetch_unary_port)),
            *("--port2", str(fs_port), "--reads", "unary"),
        ],
    }
    peer = {name: subprocess.Popen([*me, *argv], stderr=out) for name, argv in peers.items()}
    procs = list(peer.values())
    env = serving_stack_env(
        bootstrap=bootstrap,
        redis_port=redis_port,
        features=(fs_port, fs_admin),
        registry=(reg_port, reg_admin),
        serving=(grpc_port, admin_port),
        artifact_dir=artifacts,
        signing_key=SIGNING_KEY,
    )
    # The same serving with a GetOnlineFeatures call per read, for the c=1 comparison.
    unary_env = env | {
        "DRIFTLINE_SERVING__GRPC_PORT": str(unary_grpc_port),
        "DRIFTLINE_SERVING__ADMIN__PORT": str(unary_admin_port),
        "DRIFTLINE_SERVING__FEATURE_READS": "unary",
    }
    try:
        champion, servings = await start_serving_stack(
            {"serving": env, "serving (unary reads)": unary_env}, log, out, procs
        )
        serving, serving_unary = servings["serving"], servings["serving (unary reads)"]
        target, echo = f"127.0.0.1:{grpc_port}", f"127.0.0.1:{echo_port}"
        echo_pid, serving_pid = peer["echo"].pid, serving.pid
        port_of = {
            "echo": echo_port,
            "echo_uvloop": uv_echo_port,
            "relay": relay_port,
            "stream_relay": stream_relay_port,
            "fetch_relay": fetch_port,
            "fetch_relay_unary": fetch_unary_port,
        }
        targets = {name: (f"127.0.0.1:{port_of[name]}", p.pid) for name, p in peer.items()}
        targets["predict"] = (target, serving_pid)
        targets["predict_unary_reads"] = (f"127.0.0.1:{unary_grpc_port}", serving_unary.pid)
        # The prediction log is read after each load phase, once it has caught up, so
        # that a phase's drops are its own.
        phases: dict[str, dict[str, float]] = {}
        start = await _logged(admin_port)
        c1 = await latency(targets, args.requests)
        echo_c1, predict_c1 = c1["echo"], c1["predict"]
        print(f"c=1 {c1}", flush=True)
        after_c1 = await _logged(admin_port)
        phases["predict_c1"] = _phase(start, after_c1)
        echo_c16 = await throughput(echo, 16, args.seconds, echo_pid)
        predict_c16 = await throughput(target, 16, args.seconds, serving_pid)
        print(f"c=16 echo {echo_c16} predict {predict_c16}", flush=True)
        after_c16 = await _logged(admin_port)
        phases["predict_c16"] = _phase(after_c1, after_c16)
        infer = await infer_rows(target, 256, args.seconds, serving_pid)
        print(f"ModelInfer {infer}", flush=True)
        log_end = await _logged(admin_port)
        phases["model_infer_256_rows"] = _phase(after_c16, log_end)
        print(f"prediction log {log_end} by phase {phases}", flush=True)
    finally:
        stop_processes(procs)
        out.close()
        shutil.rmtree(artifacts, ignore_errors=True)
    ratio = predict_c1["p50_ms"] / echo_c1["p50_ms"]

    def to_echo(name: str) -> float:
        return round(c1[name]["p50_ms"] / echo_c1["p50_ms"], 2)

    return {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine_cores": os.cpu_count(),
        "setup": "serving, the features service with redis-server, the registry service "
        f"(champion v{champion}), the echo, "
        "Kafka and this client each in their own process on loopback; Predict fetches 9 "
        "online features per request from the features service (GetOnlineFeatures, Redis)",
        "echo_c1": echo_c1,
        "echo_on_uvloop_c1": c1["echo_uvloop"],
        "two_hop_echo_c1": c1["relay"],
        "two_hop_echo_second_on_a_stream_c1": c1["stream_relay"],
        "fetch_only_c1": c1["fetch_relay"],
        "fetch_only_unary_reads_c1": c1["fetch_relay_unary"],
        "predict_c1": predict_c1,
        "predict_unary_reads_c1": c1["predict_unary_reads"],
        "predict_c1_p50_ratio_to_echo": round(ratio, 2),
        "p50_ratios_to_echo": {
            name: to_echo(name)
            for name in (
                "echo_uvloop",
                "relay",
                "stream_relay",
                "fetch_relay",
                "fetch_relay_unary",
                "predict",
                "predict_unary_reads",
            )
        },
        "echo_c16": echo_c16,
        "predict_c16": predict_c16,
        "model_infer_256_rows": infer,
        "prediction_log": {
            "note": "rows: Predict answers one, ModelInfer its rows; a ModelInfer request is "
            "one Kafka record (PredictionBatch); written counts rows handed to Kafka",
            **_phase(start, log_end),
            "by_phase": phases,
        },
        "targets": {
            "predict_c1_p50_ms<=2": predict_c1["p50_ms"] <= 2.0,
            "predict_c1_p50<=3x_echo": ratio <= 3.0,
            "predict_c1_p99_ms<=10": predict_c1["p99_ms"] <= 10.0,
            "c16_req_per_s>=1000": predict_c16["requests_per_s"] >= 1000,
            "c16_p99_ms<=50": predict_c16["p99_ms"] <= 50.0,
            "infer_rows_per_s>=20000": infer["rows_per_s"] >= 20_000,
            "prediction_log_rows_dropped==0": log_end["rows_dropped"] == start["rows_dropped"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--role",
        choices=["bench", "echo", "echo-uvloop", "relay", "stream-relay", "fetch-relay"],
        default="bench",
    )
    parser.add_argument("--port2", type=int, default=0)
    parser.add_argument("--reads", choices=["stream", "unary"], default="stream")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--requests", type=int, default=3000, help="c=1 requests per target")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load phase")
    args = parser.parse_args()
    if args.role == "echo":
        asyncio.run(run_echo(args.port))
        return
    if args.role == "echo-uvloop":
        asyncio.run(run_echo_uvloop(args.port))
        return
    if args.role == "relay":
        asyncio.run(run_relay(args.port, args.port2))
        return
    if args.role == "stream-relay":
        asyncio.run(run_stream_relay(args.port, args.port2))
        return
    if args.role == "fetch-relay":
        asyncio.run(run_fetch_relay(args.port, args.port2, args.reads))
        return
    from local_platform import local_platform

    with local_platform() as platform:
        result = asyncio.run(measure(args, platform.bootstrap_servers, platform.redis_port))
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
