"""The cost of secure mode (issue 20): Predict over mutual TLS with an API key against
plaintext, measured in the same run.

Starts two copies of the serving bench's stack (:func:`bench_serving.start_serving_stack`:
Kafka, redis-server, the features, registry and serving services as processes, one
signed champion, online values for 1,000 entities), each on its own free ports:

- **plaintext**, as ``bench_serving.py`` runs it;
- **secure**: the same with ``security.enabled`` and a credentials directory written by
  ``pki.write_credentials`` and ``auth_files.write_auth_files``: Kafka SASL_SSL over
  client certificates with the access table's ACLs (topics created as ``admin``), Redis
  TLS only with ACL users, mutual TLS on every gRPC link (serving -> features, serving
  -> registry), serving's API keys on.

The bench's client calls the secure serving as a public caller pays for it: the
``client`` identity's certificate over mutual TLS and its key as ``x-api-key``
metadata (a service or ``admin`` certificate would skip the key check). Every phase
alternates the two stacks, round by round, so that a slow spell of the shared machine
falls on both and the ratios secure/plaintext are what is reported:

- Predict at concurrency 1 (p50, p99; the serving bench's :func:`latency`);
- Predict at concurrency 16, requests/s (the serving bench's :func:`throughput`);
- a new channel's first answer (TCP connect + the TLS handshake + the first Predict),
  which a client that reconnects pays each time.

Before measuring it checks that the secure serving refuses a plaintext client and a
call without a key, so the figure is of secure mode, not of a stack that fell back.
Writes ``bench/out/security.json``.

    uv run python bench/bench_security.py [--requests 4000] [--seconds 8] [--c16-rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "security.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import (  # noqa: E402 - the serving bench's stack and load
    MODEL,
    SIGNING_KEY,
    fill_online_store,
    latency,
    start_serving_stack,
    throughput,
)
from local_platform import (  # noqa: E402 - bench/ holds the helpers
    BenchPlatform,
    Caller,
    local_platform,
    serving_stack_env,
    stop_processes,
)
from measure import pct  # noqa: E402 - bench/ holds the helpers

from driftline.devtools.infra import free_ports  # noqa: E402
from driftline.devtools.infra.pki import write_credentials  # noqa: E402
from driftline.kafkaio import provision_topics  # noqa: E402
from driftline.security import credentials_for  # noqa: E402
from driftline.security.api_keys import API_KEY_METADATA  # noqa: E402
from driftline.security.auth_files import write_auth_files  # noqa: E402
from driftline.security.kafka_auth import kafka_auth  # noqa: E402
from driftline.settings import KafkaSettings, SecuritySettings  # noqa: E402
from driftline.v1 import predictor_pb2, predictor_pb2_grpc  # noqa: E402

STACKS = ("plaintext", "secure")
FRESH = (("grpc.use_local_subchannel_pool", 1),)
"""A new channel's own connection: without it gRPC may hand the new channel a live
subchannel of an earlier one to the same address, and no handshake would be timed."""


def secure_caller(security: SecuritySettings) -> Caller:
    """The public caller: the ``client`` certificate and its API key."""
    creds = credentials_for(security, "client")
    assert creds is not None, "secure mode is on"
    key = creds.secret("api.key").get_secret_value()
    return Caller(security, "client", ((API_KEY_METADATA, key),))


async def first_answers(
    targets: dict[str, tuple[str, Caller]], n: int
) -> dict[str, dict[str, float]]:
    """Seconds from opening a new channel to its first Predict answer, ``n`` times per
    target, the targets taking turns (each channel closed before the next opens)."""
    request = predictor_pb2.PredictRequest(entity_id="bench-0", model_name=MODEL)
    times: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(n):
        for name, (addr, caller) in targets.items():
            t = time.perf_counter()
            channel = caller.channel(addr, options=FRESH)
            try:
                stub = predictor_pb2_grpc.PredictorStub(channel)
                await stub.Predict(request, timeout=5, metadata=caller.call_metadata)
                times[name].append(time.perf_counter() - t)
            finally:
                await channel.close(None)
    return {
        name: {
            "channels": len(ts),
            "p50_ms": round(statistics.median(ts) * 1000, 3),
            "p99_ms": round(pct(ts, 0.99) * 1000, 3),
        }
        for name, ts in times.items()
    }


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The c=16 rounds of one stack: mean rate (rounds are of equal length), median of the
    rounds' percentiles, all errors."""
    return {
        "concurrency": rounds[0]["concurrency"],
        "rounds": len(rounds),
        "requests_per_s": round(statistics.mean(r["requests_per_s"] for r in rounds), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in rounds), 3),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in rounds), 3),
        "errors": sum(r["errors"] for r in rounds),
        "errors_by_status": dict(
            sum((collections.Counter(r["errors_by_status"]) for r in rounds), collections.Counter())
        ),
        "server_cpu_us_per_request": round(
            statistics.mean(r["server_cpu_us_per_request"] for r in rounds), 1
        ),
        "requests_per_s_by_round": [r["requests_per_s"] for r in rounds],
    }


async def refusals(target: str, caller: Caller) -> dict[str, str]:
    """What the secure serving answers a plaintext client and a certificate without a key
    (status names; ``OK`` would mean it is not secure)."""
    request = predictor_pb2.PredictRequest(entity_id="bench-0", model_name=MODEL)
    seen: dict[str, str] = {}
    for what, who in (
        ("plaintext_client", Caller(None)),
        ("client_certificate_without_api_key", Caller(caller.security, caller.identity)),
    ):
        async with who.channel(target) as channel:
            try:
                await predictor_pb2_grpc.PredictorStub(channel).Predict(request, timeout=5)
                seen[what] = "OK"
            except grpc.aio.AioRpcError as exc:
                seen[what] = exc.code().name
    return seen


def _ratio(secure: float, plain: float) -> float:
    return round(secure / plain, 3)


async def measure(
    args: argparse.Namespace, platforms: dict[str, BenchPlatform], credentials: Path
) -> dict[str, Any]:
    security = {
        "plaintext": SecuritySettings(),
        "secure": SecuritySettings(enabled=True, credentials_dir=credentials),
    }
    callers = {
        "plaintext": Caller(security["plaintext"]),
        "secure": secure_caller(security["secure"]),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    logs = {name: OUT.parent / f"security-bench-{name}.log" for name in STACKS}
    artifacts = {name: Path(tempfile.mkdtemp(prefix=f"driftline-bench-{name}-")) for name in STACKS}
    procs: list[Any] = []
    targets: dict[str, tuple[str, int]] = {}
    champions: dict[str, int] = {}
    started = time.monotonic()
    with contextlib.ExitStack() as files:
        outs = {name: files.enter_context(logs[name].open("wb")) for name in STACKS}
        try:
            for name in STACKS:
                platform = platforms[name]
                fs_port, fs_admin, reg_port, reg_admin, grpc_port, admin_port = free_ports(6)
                redis = platform.redis
                store_auth = redis.auth("features") if redis is not None else None
                await fill_online_store(f"redis://127.0.0.1:{platform.redis_port}/0", store_auth)
                admin = kafka_auth(security[name], "admin")
                if admin is not None:  # services may not create topics in secure mode
                    kafka = KafkaSettings(bootstrap_servers=platform.bootstrap_servers)
                    await provision_topics(kafka, security=admin)
                env = serving_stack_env(
                    bootstrap=platform.bootstrap_servers,
                    redis_port=platform.redis_port,
                    features=(fs_port, fs_admin),
                    registry=(reg_port, reg_admin),
                    serving=(grpc_port, admin_port),
                    artifact_dir=artifacts[name],
                    signing_key=SIGNING_KEY,
                )
                if security[name].enabled:
                    env["DRIFTLINE_SECURITY__ENABLED"] = "true"
                    env["DRIFTLINE_SECURITY__CREDENTIALS_DIR"] = str(credentials)
                champions[name], servings = await start_serving_stack(
                    {f"serving ({name})": env}, logs[name], outs[name], procs, security[name]
                )
                targets[name] = (f"127.0.0.1:{grpc_port}", servings[f"serving ({name})"].pid)
            startup_s = time.monotonic() - started
            checks = await refusals(targets["secure"][0], callers["secure"])
            print(f"secure serving refuses: {checks}", flush=True)
            c1 = await latency(targets, args.requests, rounds=args.c1_rounds, callers=callers)
            print(f"c=1 {c1}", flush=True)
            c16_rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in STACKS}
            for _ in range(args.c16_rounds):
                for name, (addr, pid) in targets.items():
                    c16_rounds[name].append(
                        await throughput(addr, 16, args.seconds, pid, callers[name])
                    )
            c16 = {name: _summary(rounds) for name, rounds in c16_rounds.items()}
            print(f"c=16 {c16}", flush=True)
            fresh = await first_answers(
                {name: (targets[name][0], callers[name]) for name in STACKS}, args.channels
            )
            print(f"new channel, first answer {fresh}", flush=True)
        finally:
            stop_processes(procs)
            for directory in artifacts.values():
                shutil.rmtree(directory, ignore_errors=True)
    ratios = {
        "predict_c1_p50": _ratio(c1["secure"]["p50_ms"], c1["plaintext"]["p50_ms"]),
        "predict_c1_p99": _ratio(c1["secure"]["p99_ms"], c1["plaintext"]["p99_ms"]),
        "predict_c16_requests_per_s": _ratio(
            c16["secure"]["requests_per_s"], c16["plaintext"]["requests_per_s"]
        ),
        "predict_c16_p99": _ratio(c16["secure"]["p99_ms"], c16["plaintext"]["p99_ms"]),
        "new_channel_first_answer_p50": _ratio(
            fresh["secure"]["p50_ms"], fresh["plaintext"]["p50_ms"]
        ),
    }
    return {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine_cores": os.cpu_count(),
        "setup": "two stacks in one run, each Kafka, redis-server and the features, registry "
        "and serving services in their own processes on loopback, the champion registered "
        f"(plaintext v{champions['plaintext']}, secure v{champions['secure']}); secure: "
        "security.enabled (mTLS on every gRPC link, Kafka SASL_SSL/SCRAM with ACLs, Redis "
        "TLS with ACL users); the bench calls the secure serving with the 'client' "
        "certificate and its API key as x-api-key metadata; phases alternate the stacks "
        "round by round",
        "stack_startup_s": round(startup_s, 1),
        "secure_serving_refuses": checks,
        "predict_c1": c1,
        "predict_c16": c16,
        "new_channel_first_answer": {
            "note": "a new channel (its own connection) to its first Predict answer: TCP "
            "connect, the TLS handshake with both certificates verified, the first call",
            **fresh,
            "added_by_tls_ms": round(fresh["secure"]["p50_ms"] - fresh["plaintext"]["p50_ms"], 3),
        },
        "ratios_secure_to_plaintext": ratios,
        "targets": {
            "secure_serving_refuses_plaintext_and_keyless": checks
            == {
                "plaintext_client": "UNAVAILABLE",
                "client_certificate_without_api_key": "UNAUTHENTICATED",
            },
            "predict_c1_p50_ratio<=1.5": ratios["predict_c1_p50"] <= 1.5,
            "predict_c16_requests_per_s_ratio>=0.67": ratios["predict_c16_requests_per_s"] >= 0.67,
            "c16_errors==0": c16["secure"]["errors"] + c16["plaintext"]["errors"] == 0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="c=1 requests per stack")
    parser.add_argument("--c1-rounds", type=int, default=10, help="c=1 turns per stack")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of a c=16 round")
    parser.add_argument("--c16-rounds", type=int, default=5, help="c=16 rounds per stack")
    parser.add_argument("--channels", type=int, default=100, help="new channels per stack")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="driftline-sec-")))
        credentials = tmp / "credentials"
        write_credentials(credentials)
        write_auth_files(credentials)
        platforms = {
            "plaintext": stack.enter_context(local_platform()),
            "secure": stack.enter_context(local_platform(secure_credentials=credentials)),
        }
        result = asyncio.run(measure(args, platforms, credentials))
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
