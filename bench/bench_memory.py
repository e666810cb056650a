"""Memory at a sustained rate (issue #19): every service's RSS at idle, after 200,000 and
after 400,000 loan events produced with kcat.

The whole platform (Kafka, Redis, the six services) starts with ``driftline up --detach
--no-ops`` in an isolated environment (free ports, its own state directory), as
``bench_ops.py`` starts it, with training's label join capped below what the run makes
it hold (``DRIFTLINE_TRAINING__LABEL_JOIN_MAX_PENDING``, ``--max-pending``).  Loan
applications of the demo's scenario (River's Agrawal records, ``driftline.devtools.scenario``)
are fed to kcat, a client this project did not write, at ``--rate`` events a second on
``driftline.events``, in two phases of ``--events`` each; one event in ``--label-every``
gets its label on ``driftline.labels`` ``--label-delay`` events later, the others are never
labelled, so the join holds them for the allowed lateness (an hour of event time: the
run spans minutes of event time, so the watermark evicts none of them and only the cap
bounds the join).  After each phase the bench waits until training has read every
vector and label (training's join counters; its consumer group's committed offsets
stay behind the vectors the join still holds, so its lag is no sign of being done)
and the services' counters stop moving, then records each process's resident memory
(``/proc``, the pid files under the state directory and their children, as
``bench_ops.platform_rss``) and the join's waiting records and outcomes from training's
``/metrics``.  ``driftline down`` runs at the end whatever happened.

    uv run python bench/bench_memory.py [--rate 1500] [--events 200000] [--max-pending 100000]

Writes ``bench/out/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_ops import (  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
    _cli,  # bench/ holds the helpers (mypy finds them with MYPYPATH=bench)
    platform_rss,
)

from driftline.contracts.topics import EVENTS, LABELS  # noqa: E402
from driftline.devtools.demo_env import isolated_platform_env  # noqa: E402
from driftline.devtools.scenario import Application, ScenarioConfig, applications  # noqa: E402
from driftline.settings.models import TrainingSettings  # noqa: E402

OUT = ROOT / "bench" / "out" / "memory.json"
KCAT = "/usr/bin/kcat"
SERVICES = ("ingestion", "features", "training", "registry", "serving", "monitoring")
WAITING_VECTOR_KB = 0.7
"""A waiting vector of the loans feature set with its prediction, as the runbook
(docs/runbooks/LabelJoinOverCap.md) and ``training.label_join_max_pending`` size it."""
JOIN_RECORDS = "driftline_training_join_records_total"
TICK_S = 0.05
SAMPLE_EVERY_S = 10.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: str) -> Samples:
    """Every sample on a service's ``/metrics`` (empty while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


class Platform:
    """The platform the bench started: its environment, state directory and metrics."""

    def __init__(self, env: dict[str, str], state: Path) -> None:
        self.env = env
        self.state = state
        self.bootstrap = env["DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"]

    def metrics(self, service: str) -> Samples:
        return scrape(self.env[f"DRIFTLINE_{service.upper()}__ADMIN__PORT"])

    def counters(self) -> dict[str, float]:
        """What each stage has read so far: ingestion and features (records in), training
        (vectors and labels through the join)."""
        ing, feat, tr = (self.metrics(s) for s in ("ingestion", "features", "training"))
        return {
            "ingestion_events": total(ing, "driftline_messages_in_total", topic=EVENTS.name),
            "ingestion_labels": total(ing, "driftline_messages_in_total", topic=LABELS.name),
            "features_in": total(feat, "driftline_messages_in_total"),
            "training_vectors": total(tr, JOIN_RECORDS, outcome="vectors"),
            "training_labels": total(tr, JOIN_RECORDS, outcome="labels"),
        }

    def join(self) -> dict[str, float]:
        """Training's label join: records waiting on each side, and every outcome."""
        tr = self.metrics("training")
        out = {
            f"waiting_{side}": total(tr, "driftline_training_join_waiting", side=side)
            for side in ("vectors", "labels")
        }
        for (name, labels), value in sorted(tr.items()):
            if name == JOIN_RECORDS:
                outcome = dict(labels)["outcome"]
                out[outcome] = out.get(outcome, 0) + value
        out["examples_learned"] = total(tr, "driftline_training_examples_learned_total")
        return out

    def rss(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in sorted(platform_rss(self.state).items())}


def _kcat(bootstrap: str, topic: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [KCAT, "-P", "-b", bootstrap, "-t", topic, "-K", "|", "-X", "linger.ms=20",
         "-X", "queue.buffering.max.messages=1000000"],
        stdin=subprocess.PIPE,
    )  # fmt: skip


def _line(app: Application, label: bool) -> bytes:
    record = app.raw_label(at=datetime.now(UTC)) if label else app.raw_event()
    return app.entity_id.encode() + b"|" + record.model_dump_json().encode() + b"\n"


def _close(*procs: subprocess.Popen[bytes]) -> None:
    """Close each kcat's input and wait until it has delivered everything."""
    for proc in procs:
        if proc.stdin is not None:
            proc.stdin.close()
    for proc in procs:
        if proc.wait(timeout=120) != 0:
            raise RuntimeError(f"kcat exited {proc.returncode}")


def feed(
    platform: Platform,
    apps: Iterator[Application],
    count: int,
    args: argparse.Namespace,
    timeline: list[dict[str, Any]],
    sent_before: int,
) -> dict[str, Any]:
    """Produce ``count`` events at ``args.rate`` a second (and their labels) with kcat;
    every ``SAMPLE_EVERY_S``, how far training has read and what each process holds."""
    events, labels = _kcat(platform.bootstrap, EVENTS.name), _kcat(platform.bootstrap, LABELS.name)
    assert events.stdin is not None and labels.stdin is not None
    waiting: deque[Application] = deque()
    sent = labelled = backlog = 0
    t0 = next_sample = time.monotonic()
    try:
        while sent < count:
            due = min(count, int((time.monotonic() - t0) * args.rate) + 1)
            chunk, label_chunk = [], []
            for app in (next(apps) for _ in range(due - sent)):
                chunk.append(_line(app, label=False))
                if app.index % args.label_every == 0:
                    waiting.append(app)
                while waiting and waiting[0].index + args.label_delay <= app.index:
                    label_chunk.append(_line(waiting.popleft(), label=True))
            sent, labelled = sent + len(chunk), labelled + len(label_chunk)
            events.stdin.write(b"".join(chunk))
            labels.stdin.write(b"".join(label_chunk))
            events.stdin.flush()
            labels.stdin.flush()
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + SAMPLE_EVERY_S
                read = platform.counters()["training_vectors"]
                backlog = max(backlog, sent_before + sent - int(read))
                timeline.append({"t_s": round(now - t0, 1), "events_sent": sent_before + sent,
                                 "training_read": int(read), "rss_mb": platform.rss()})  # fmt: skip
            time.sleep(max(0.0, TICK_S - (time.monotonic() - now)))
        # The labels still to come go now, so that the phase ends with every label sent.
        rest = [_line(app, label=True) for app in waiting]
        labelled += len(rest)
        labels.stdin.write(b"".join(rest))
        fed_s = time.monotonic() - t0
    finally:
        _close(events, labels)
    return {"events": sent, "labels": labelled, "feed_s": round(fed_s, 1),
            "events_per_s_fed": round(sent / fed_s, 1), "largest_backlog_events": backlog,
            "t0": t0}  # fmt: skip


def drained(platform: Platform, events: int, labels: int, timeout_s: float) -> float:
    """The monotonic time at which training had read ``events`` vectors and ``labels``
    labels; returns once, besides, no service's counters moved for three scrapes in a row."""
    t0, last, still, caught_up = time.monotonic(), None, 0, None
    while time.monotonic() - t0 < timeout_s:
        c = platform.counters()
        if c["training_vectors"] >= events and c["training_labels"] >= labels:
            caught_up = caught_up or time.monotonic()
            still = still + 1 if c == last else 0
            if still >= 2:
                return caught_up
        last = c
        time.sleep(0.5 if caught_up is None else 2)
    raise TimeoutError(f"not consumed within {timeout_s:.0f} s: {platform.counters()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=1500, help="events a second offered")
    parser.add_argument("--events", type=int, default=200_000, help="events per phase")
    parser.add_argument("--phases", type=int, default=2)
    parser.add_argument("--max-pending", type=int, default=100_000,
                        help="training.label_join_max_pending for the run")  # fmt: skip
    parser.add_argument("--label-every", type=int, default=10, help="one event in N is labelled")
    parser.add_argument("--label-delay", type=int, default=5000,
                        help="a label follows its event by this many events")  # fmt: skip
    args = parser.parse_args()
    lateness = TrainingSettings.model_fields["allowed_lateness_s"].default
    result: dict[str, Any] = {
        "rate_offered": args.rate,
        "events_per_phase": args.events,
        "label_every": args.label_every,
        "label_delay_events": args.label_delay,
        "label_join_max_pending": args.max_pending,
        "label_join_max_pending_default": TrainingSettings.model_fields[
            "label_join_max_pending"
        ].default,
        "allowed_lateness_s": lateness,
        "event_time_span_s": round(args.phases * args.events / args.rate, 1),
        "producer": f"kcat {KCAT} -P, paced from Python at the offered rate",
        "topics": [EVENTS.name, LABELS.name],
    }
    timeline: list[dict[str, Any]] = []
    result["timeline"] = timeline
    with tempfile.TemporaryDirectory(prefix="driftline-bench-memory-") as tmp:
        state = Path(tmp) / "state"
        env = isolated_platform_env(state)
        env["DRIFTLINE_TRAINING__LABEL_JOIN_MAX_PENDING"] = str(args.max_pending)
        platform = Platform(env, state)
        t0 = time.monotonic()
        done = _cli(env, "up", "--detach", "--no-ops", "--timeout", "300")
        try:
            if done.returncode != 0:
                raise SystemExit(f"driftline up failed:\n{done.stdout}\n{done.stderr}")
            result["up_s"] = round(time.monotonic() - t0, 1)
            time.sleep(15)  # every service past its start-up
            result["rss_mb"] = {"idle": platform.rss()}
            result["training_join"] = {"idle": platform.join()}
            print(f"up in {result['up_s']} s; idle RSS {result['rss_mb']['idle']}", flush=True)
            scenario = ScenarioConfig(
                events=args.phases * args.events,
                drift_at=args.phases * args.events,  # no drift: memory, not accuracy
                start=datetime.now(UTC),
                interval=timedelta(seconds=1 / args.rate),
            )
            apps = applications(scenario)
            phases: list[dict[str, Any]] = []
            sent = labels = 0
            for n in range(1, args.phases + 1):
                phase = feed(platform, apps, args.events, args, timeline, sent)
                sent, labels = sent + phase["events"], labels + phase["labels"]
                start = phase.pop("t0")
                caught_up = drained(platform, sent, labels, 600)
                phase["drain_s"] = round(caught_up - start - phase["feed_s"], 1)
                phase["events_per_s_end_to_end"] = round(phase["events"] / (caught_up - start), 1)
                key = f"after_{sent // 1000}k"
                result["rss_mb"][key] = platform.rss()
                result["training_join"][key] = platform.join()
                phases.append(phase)
                print(f"phase {n}: {phase}\n  RSS {result['rss_mb'][key]}\n  join "
                      f"{result['training_join'][key]}", flush=True)  # fmt: skip
            result["phases"] = phases
        finally:
            down = _cli(env, "down", "--timeout", "60", timeout=600)
            print(f"driftline down: exit {down.returncode}", flush=True)
    summarise(result, args)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=2))
    return 0


def summarise(result: dict[str, Any], args: argparse.Namespace) -> None:
    """Totals, the growth of every process over the last phase, the training bar."""
    rss: dict[str, dict[str, float]] = result["rss_mb"]
    keys = list(rss)
    result["rss_mb_total"] = {k: round(sum(v.values()), 1) for k, v in rss.items()}
    result["rss_mb_services_total"] = {
        k: round(sum(m for name, m in v.items() if name in SERVICES), 1) for k, v in rss.items()
    }
    before, after = rss[keys[-2]], rss[keys[-1]]
    result["growth_window"] = f"{keys[-2]} -> {keys[-1]}"
    result["growth_mb"] = {p: round(after.get(p, 0) - before.get(p, 0), 1) for p in after}
    result["growth_pct"] = {
        p: round(100 * (after[p] - before[p]) / before[p], 1) for p in after if before.get(p)
    }
    phases = result["phases"]
    result["events_per_s_fed"] = round(
        sum(p["events"] for p in phases) / sum(p["feed_s"] for p in phases), 1
    )
    result["events_per_s_end_to_end"] = min(p["events_per_s_end_to_end"] for p in phases)
    join = result["training_join"][keys[-1]]
    result["evictions"] = {
        "vectors_over_cap": join.get("vectors_over_cap", 0),
        "orphans_over_cap": join.get("orphans_over_cap", 0),
        "evicted_unlabeled": join.get("evicted_unlabeled", 0),
    }
    # Without the cap the join would hold every unlabelled vector of the run (the
    # watermark passes none of them): the last phase's would add this much to training.
    unlabelled = phases[-1]["events"] - phases[-1]["events"] // args.label_every
    uncapped = unlabelled * WAITING_VECTOR_KB * 1000 / 2**20
    result["unlabelled_vectors_sent"] = sum(p["events"] for p in phases) - sum(
        p["events"] // args.label_every for p in phases
    )
    result["training_uncapped_growth_mb_estimate"] = round(uncapped, 1)
    result["training_growth_bar_mb"] = round(uncapped / 4, 1)
    idle, first = result["training_join"]["idle"], result["training_join"][keys[1]]
    held = first["waiting_vectors"] + first["waiting_labels"] - idle["waiting_vectors"]
    grew = rss[keys[1]].get("training", 0) - rss["idle"].get("training", 0)
    result["training_kb_per_held_record"] = round(grew * 1024 / held, 2) if held else None


if __name__ == "__main__":
    sys.exit(main())
