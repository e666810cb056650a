"""Run every benchmark and gather one report: bench/report.md + bench/report.json.

Each ``bench_*.py`` writes ``bench/out/<name>.json``; this script runs them in
turn (one broker per script, torn down after), then writes the machine's
description and every figure with the baseline it is measured against.

    uv run python bench/run_all.py [--only kafka_baseline,features]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

# name -> script; order matters: the baselines first.
BENCHES = {
    "kafka_baseline": "bench_kafka_baseline.py",
    "infra": "bench_infra.py",
    "features": "bench_features.py",
    "training": "bench_training.py",
    "registry": "bench_registry.py",
    "serving": "bench_serving.py",
    "drift": "bench_drift.py",
}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def render(report: dict[str, Any]) -> str:
    """The Markdown report."""
    lines = ["# Driftline benchmark report", ""]
    m = report["machine"]
    lines += [
        f"Measured {m['when']} on {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}. The machine is shared and noisy: compare the ratios to the "
        "baselines measured in the same run, not absolute times.",
        "",
    ]
    for name, entry in report["benches"].items():
        lines.append(f"## {name}")
        lines.append("")
        if entry["status"] != "ok":
            lines += [f"**{entry['status']}**: {entry.get('detail', '')}", ""]
            continue
        lines.append(f"({entry['seconds']:.0f} s)")
        lines.append("")
        lines.append("```json")
        lines.append(json.dumps(entry["result"], indent=2))
        lines.append("```")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated bench names")
    args = parser.parse_args()
    only = {x for x in args.only.split(",") if x}
    OUT.mkdir(exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "benches": {}}
    previous = HERE / "report.json"
    if only and previous.exists():
        # A partial run updates the named entries and keeps the others' figures.
        report["benches"] = json.loads(previous.read_text()).get("benches", {})
    for name, script in BENCHES.items():
        if only and name not in only:
            continue
        path = HERE / script
        if not path.exists():
            report["benches"][name] = {
                "status": "not built",
                "detail": f"{script} does not exist yet",
            }
            continue
        print(f"── {name}: running {script}", flush=True)
        out_file = OUT / f"{name}.json"
        out_file.unlink(missing_ok=True)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(path)], cwd=HERE.parent)
        seconds = time.monotonic() - t0
        if proc.returncode != 0 or not out_file.exists():
            report["benches"][name] = {
                "status": "failed",
                "detail": f"exit {proc.returncode}; no {out_file.name}"
                if not out_file.exists()
                else f"exit {proc.returncode}",
                "seconds": seconds,
            }
            continue
        report["benches"][name] = {
            "status": "ok",
            "seconds": seconds,
            "result": json.loads(out_file.read_text()),
        }
    (HERE / "report.json").write_text(json.dumps(report, indent=2))
    (HERE / "report.md").write_text(render(report))
    print(f"wrote {HERE / 'report.md'} and {HERE / 'report.json'}")
    failed = [n for n, e in report["benches"].items() if e["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
