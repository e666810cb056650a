"""The whole loop, timed: ``driftline demo`` at its default size on a broker and Redis of its own.

Writes ``bench/out/loop.json``: detection delay, drift → retraining requested,
drift → new champion serving, and from detection to the new champion serving
(issue 7's bar: ≤ 30 s), with accuracy before / during / after the drift and
failed requests, read from the demo's report.

    uv run python bench/bench_loop.py [--events 12000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from local_platform import local_platform  # bench/ is on sys.path when run as a script

from driftline.cli.demo.report import report_summary
from driftline.devtools.demo_env import isolated_env

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "loop.json"


def number(text: str) -> float:
    return float(text.split()[0].replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=12000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="driftline-loop-") as tmp, local_platform() as p:
        state = Path(tmp) / "state"
        report = Path(tmp) / "report.md"
        env = isolated_env(
            bootstrap_servers=p.bootstrap_servers,
            redis_host=p.redis_host,
            redis_port=p.redis_port,
            state_dir=state,
        )
        argv = [sys.executable, "-m", "driftline.cli", "demo", "--events", str(args.events)]
        argv += ["--report", str(report)]
        started = time.monotonic()
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if done.returncode != 0 or not report.exists():
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
            raise SystemExit(f"the demo did not close the loop (exit {done.returncode})")
        s = report_summary(report.read_text())
    requested = number(s["drift → retrain requested (s)"])
    serving = number(s["drift → new champion serving (s)"])
    result: dict[str, Any] = {
        "events": args.events,
        "demo_seconds": round(seconds, 1),
        "detection_delay_events": int(number(s["detection delay (events)"])),
        "drift_to_retrain_requested_s": requested,
        "drift_to_new_champion_serving_s": serving,
        "detection_to_new_champion_serving_s": round(serving - requested, 1),
        "retrain_requests": int(number(s["retrain requests"])),
        "failed_requests": int(number(s["failed requests"])),
        "accuracy_before": number(s["accuracy before drift"]),
        "accuracy_during": number(s["accuracy during drift"]),
        "accuracy_after": number(s["accuracy after new champion"]),
        "note": "detection is taken as the retraining request (monitoring asks at detection)",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
