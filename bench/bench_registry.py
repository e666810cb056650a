"""Registry round trip: register + download + verify of a ~1 MB artifact.

Runs a registry replica in-process over a real gRPC socket against a throwaway
Kafka broker (or ``--bootstrap`` / ``DRIFTLINE_BENCH_BOOTSTRAP`` for a running one)
and writes ``bench/out/registry.json``.

    uv run python bench/bench_registry.py --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from local_platform import local_platform  # bench/ is on sys.path when run as a script

from driftline.artifacts import load_model
from driftline.infra import free_port
from driftline.registry.service import RegistryService
from driftline.registry_client import RegistryClient
from driftline.settings import PlatformSettings

OUT = Path(__file__).resolve().parent / "out" / "registry.json"
KEY = "bench-signing-key"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(bootstrap: str, rounds: int, size: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = PlatformSettings(
            kafka={"bootstrap_servers": bootstrap, "startup_wait_s": 10},
            registry={
                "grpc_port": 0,
                "admin": {"port": free_port()},
                "artifact_dir": tmp,
                "signing_key": KEY,
                "instance_id": f"bench-{uuid.uuid4().hex[:6]}",
            },
        )
        service = RegistryService(settings)
        started = time.perf_counter()
        await service.start()
        startup_s = time.perf_counter() - started
        name = f"bench-{uuid.uuid4().hex[:8]}"
        register_s: list[float] = []
        download_s: list[float] = []
        try:
            async with RegistryClient(f"127.0.0.1:{service.grpc_port}") as client:
                for i in range(rounds):
                    payload = {"round": i, "weights": os.urandom(size)}
                    t0 = time.perf_counter()
                    v = await client.register(name, model=payload, metrics={"accuracy": 0.9})
                    t1 = time.perf_counter()
                    data, meta = await client.download(name, version=v.version)
                    loaded = load_model(data, meta.sha256, meta.signature, KEY)
                    t2 = time.perf_counter()
                    assert loaded == payload
                    register_s.append(t1 - t0)
                    download_s.append(t2 - t1)
        finally:
            await service.stop()
    mb = size / 1e6
    return {
        "benchmark": "registry register + download round trip",
        "artifact_bytes": size,
        "rounds": rounds,
        "startup_replay_s": round(startup_s, 4),
        "register_ms": {
            "p50": round(statistics.median(register_s) * 1000, 2),
            "p95": round(_percentile(register_s, 0.95) * 1000, 2),
            "mean": round(statistics.fmean(register_s) * 1000, 2),
        },
        "download_verify_load_ms": {
            "p50": round(statistics.median(download_s) * 1000, 2),
            "p95": round(_percentile(download_s, 0.95) * 1000, 2),
            "mean": round(statistics.fmean(download_s) * 1000, 2),
        },
        "register_mb_per_s": round(mb / statistics.median(register_s), 1),
        "download_mb_per_s": round(mb / statistics.median(download_s), 1),
        "note": "one process, loopback; register includes the acks=all write and read-back",
    }


def main() -> None:
    """Parse arguments, run, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="an already running broker")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size", type=int, default=1_000_000, help="artifact bytes")
    args = parser.parse_args()
    if args.bootstrap:
        report = asyncio.run(run(args.bootstrap, args.rounds, args.size))
    else:
        with local_platform(redis=False) as platform:
            report = asyncio.run(run(platform.bootstrap_servers, args.rounds, args.size))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
