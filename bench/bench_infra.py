"""How long ``driftline infra up`` takes until Kafka and Redis both answer.

- cold: a fresh state directory, so Kafka's storage format is included (the
  jars are already cached: fetching them is a one-time cost, reported apart);
- warm: restarting on existing state (the usual ``infra up``).

Each run uses a :class:`LocalPlatform` on free ports in a temporary directory,
and "ready" means a real Kafka metadata request listing the broker and a real
Redis ``PING``.  Writes ``bench/out/infra.json`` and prints a table.

    uv run python bench/bench_infra.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from driftline.devtools.infra import (
    DEFAULT_JVM_OPTIONS,
    LocalPlatform,
    ensure_kafka_jars,
    free_port,
)
from driftline.settings import PlatformSettings

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
INFRA = HERE.parent / "infra"


def _settings(state_dir: Path) -> PlatformSettings:
    kafka_port = free_port()
    controller_port = free_port(exclude=frozenset({kafka_port}))
    redis_port = free_port(exclude=frozenset({kafka_port, controller_port}))
    return PlatformSettings(
        kafka={"bootstrap_servers": f"127.0.0.1:{kafka_port}", "controller_port": controller_port},
        redis={"port": redis_port},
        # Kafka + Redis only: what the ops stack adds is bench_ops.py's figure.
        infra={"state_dir": state_dir, "ops": {"enabled": False}},
    )


def _one_up(platform: LocalPlatform) -> dict[str, float]:
    began = time.monotonic()
    outcomes = platform.up()
    total = time.monotonic() - began
    assert all(not o.already_running for o in outcomes), "a component was already running"
    result = {"up_s": total}
    result.update({f"{o.name}_s": o.seconds for o in outcomes})
    began = time.monotonic()
    platform.down()
    result["down_s"] = time.monotonic() - began
    return result


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    keys = runs[0].keys()
    return {
        key: {
            "mean": round(statistics.fmean(r[key] for r in runs), 2),
            "min": round(min(r[key] for r in runs), 2),
            "max": round(max(r[key] for r in runs), 2),
        }
        for key in keys
    } | {"runs": [{k: round(v, 2) for k, v in r.items()} for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="driftline-bench-infra-") as tmp:
        root = Path(tmp)
        base = _settings(root / "unused")
        began = time.monotonic()
        ensure_kafka_jars(base, infra_dir=INFRA)  # one-time cost, kept out of the runs
        jars_s = time.monotonic() - began

        cold: list[dict[str, float]] = []
        for i in range(args.runs):
            platform = LocalPlatform(_settings(root / f"cold-{i}"), infra_dir=INFRA)
            cold.append(_one_up(platform))
            print(f"cold run {i + 1}: {cold[-1]['up_s']:.1f}s", flush=True)

        warm: list[dict[str, float]] = []
        platform = LocalPlatform(_settings(root / "warm"), infra_dir=INFRA)
        _one_up(platform)  # create the state once; the same ports every restart
        for i in range(args.runs):
            warm.append(_one_up(platform))
            print(f"warm run {i + 1}: {warm[-1]['up_s']:.1f}s", flush=True)

    result = {
        "benchmark": "driftline infra up: seconds until Kafka answers metadata and Redis PING",
        "kafka_version": base.infra.kafka_version,
        "kafka_heap": base.infra.kafka_heap,
        "jvm_options": list(DEFAULT_JVM_OPTIONS),
        "jar_check_s": round(jars_s, 2),
        "cold": _summary(cold),
        "warm": _summary(warm),
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "note": "cold = fresh state dir (storage format included), jars cached; "
        "warm = restart on existing state; Kafka and Redis start concurrently",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "infra.json").write_text(json.dumps(result, indent=2))

    print()
    print(f"{'':6} {'up (s)':>16} {'kafka (s)':>16} {'redis (s)':>16} {'down (s)':>16}")
    for name, runs in (("cold", cold), ("warm", warm)):
        cells = []
        for key in ("up_s", "kafka_s", "redis_s", "down_s"):
            values = [r[key] for r in runs]
            cells.append(f"{statistics.fmean(values):6.2f} [{min(values):.1f}-{max(values):.1f}]")
        print(f"{name:6} " + " ".join(f"{c:>16}" for c in cells))
    print(f"\nwrote {OUT / 'infra.json'}")


if __name__ == "__main__":
    main()
