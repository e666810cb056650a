"""The ops stack's cost and speed: start-up time it adds, memory, drift -> alert.

Each round starts the whole local platform with ``driftline up --detach`` in an
isolated environment (free ports, its own state directory): once with ``--no-ops``
(Kafka, Redis, the six services: the baseline of the same run) and once with the
ops stack (plus Prometheus, Alertmanager, the alert sink and Jaeger).  Rounds
alternate so the machine's noise falls on both.  With the ops stack up, the
resident memory of every process the platform runs is summed (``/proc``, the pid
files under the state directory and their children), then a short ``driftline
demo`` runs and its report gives the time from the drift detection to
``DriftDetected`` reaching Alertmanager's receiver.

    uv run python bench/bench_ops.py [--rounds 2]

Writes ``bench/out/ops.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from driftline.devtools.demo_env import demo_service_env, isolated_platform_env
from driftline.devtools.infra.pidfile import read_pid_file

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "ops.json"


def _cli(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _env(state: Path) -> dict[str, str]:
    env = isolated_platform_env(state)
    env.update(demo_service_env(3000))  # `up` starts the services the demo then uses
    return env


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def platform_rss(state: Path) -> dict[str, float]:
    """MiB resident per process named by a pid file under ``state`` (with its children)."""
    out: dict[str, float] = {}
    counted: set[int] = set()  # a process two pid files name is counted once
    for pid_file in sorted(state.rglob("*.pid")):
        record = read_pid_file(pid_file)
        if record is None:
            continue
        todo, total = [record.pid], 0
        while todo:
            pid = todo.pop()
            if pid in counted:
                continue
            counted.add(pid)
            total += _rss_kib(pid)
            todo += _children(pid)
        if total:
            out[pid_file.stem] = total / 1024
    return out


def up_seconds(ops: bool, work: Path) -> tuple[float, dict[str, str], Path]:
    state = work / ("ops" if ops else "no-ops") / str(time.monotonic_ns())
    env = _env(state)
    t0 = time.monotonic()
    done = _cli(env, "up", "--detach", "--timeout", "300", *([] if ops else ["--no-ops"]))
    took = time.monotonic() - t0
    if done.returncode != 0:
        _cli(env, "down", timeout=300)
        raise SystemExit(f"driftline up failed:\n{done.stdout}\n{done.stderr}")
    return took, env, state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    result: dict[str, Any] = {"rounds": args.rounds, "up_s": {"no_ops": [], "ops": []}}
    with tempfile.TemporaryDirectory(prefix="driftline-bench-ops-") as tmp:
        work = Path(tmp)
        for round_ in range(args.rounds):
            for ops in (False, True):
                took, env, state = up_seconds(ops, work)
                key = "ops" if ops else "no_ops"
                result["up_s"][key].append(took)
                print(f"round {round_ + 1}: up {'with' if ops else 'without'} ops {took:.1f} s",
                      flush=True)  # fmt: skip
                try:
                    if ops and round_ == args.rounds - 1:
                        time.sleep(10)  # every service past its start-up
                        rss = platform_rss(state)
                        result["rss_mib"] = rss
                        result["rss_mib_total"] = sum(rss.values())
                        print(f"RSS {result['rss_mib_total']:.0f} MiB: {rss}", flush=True)
                        report = work / "demo" / "report.md"
                        demo = _cli(
                            env,
                            *("demo", "--events", "6000", "--rate", "100", "--drift-at", "3000"),
                            *("--label-delay", "50", "--seed", "7", "--timeout", "600"),
                            *("--report", str(report)),
                        )
                        text = report.read_text() if report.is_file() else ""
                        found = re.search(r"DriftDetected at the receiver: ([\d.]+) s", text)
                        result["demo_exit"] = demo.returncode
                        result["drift_to_alert_s"] = float(found.group(1)) if found else None
                        spans = re.search(r"spans from (\d+) services", text)
                        result["loop_trace_services"] = int(spans.group(1)) if spans else None
                        print(f"demo exit {demo.returncode}; drift -> alert "
                              f"{result['drift_to_alert_s']} s", flush=True)  # fmt: skip
                finally:
                    _cli(env, "down", "--timeout", "60", timeout=600)
    no_ops = statistics.median(result["up_s"]["no_ops"])
    ops = statistics.median(result["up_s"]["ops"])
    result["up_s_median"] = {"no_ops": no_ops, "ops": ops}
    result["added_up_s"] = ops - no_ops
    result["up_ratio_ops_to_no_ops"] = ops / no_ops
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
