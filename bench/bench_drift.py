"""Drift benchmark: eval-drift at 20 seeds, and the monitor core's throughput.

Writes ``bench/out/drift.json``:

* ``eval``: per synthetic stream and detector (the retraining policy and each
  River detector alone) the detection delay (median, p90), misses, false alarms
  and false alarms per 1,000 stationary events, plus the targets met or not
  (``eval_drift.TARGETS``, each with its issue: 7 for abrupt drift and the
  controls, 18 for gradual drift over 1,000 / 5,000 events and a returning
  concept, scored per change point as ``agrawal-recurring/return``);
* ``throughput``: records per second :class:`MonitorCore` sustains with every
  detector on (per-feature ADWIN, KSWIN on every 100th value, PSI / KS / JS
  windows, prediction drift, the label join and the error-rise detector),
  JSON decoding included: a feature vector, a prediction and a label per event.

Run: ``uv run python bench/bench_drift.py [--seeds 20] [--events 30000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from driftline.contracts.messages import (
    FeatureVector,
    PredictionRecord,
    ValidLabel,
    prediction_records,
)
from driftline.monitoring import eval_label_free, eval_recurring
from driftline.monitoring.core import MonitorCore
from driftline.monitoring.eval_drift import EvalConfig, evaluate, render
from driftline.settings import MonitoringSettings, load_settings

OUT = Path(__file__).resolve().parent / "out" / "drift.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_seconds  # noqa: E402 - bench/ holds the helpers

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _encoded_events(n: int) -> list[tuple[bytes, bytes, bytes]]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        at = T0 + timedelta(milliseconds=10 * i)
        values: dict[str, Any] = {
            "salary": rng.uniform(20_000, 150_000),
            "commission": rng.choice([0.0, rng.uniform(10_000, 75_000)]),
            "age": rng.randint(20, 80),
            "elevel": rng.randint(0, 4),
            "car": f"car{rng.randint(1, 20)}",
            "zipcode": f"zip{rng.randint(0, 8)}",
            "hvalue": rng.uniform(50_000, 900_000),
            "hyears": rng.randint(1, 30),
            "loan": rng.uniform(0, 500_000),
        }
        vec = FeatureVector(
            event_id=f"e{i}",
            entity_id=f"c{i % 1000}",
            event_time=at,
            featureset="loans",
            featureset_version=1,
            values=values,
            produced_at=at,
        )
        pred = PredictionRecord(
            request_id=f"r{i}",
            event_id=f"e{i}",
            entity_id=vec.entity_id,
            model_name="loans",
            model_version=1,
            features=values,
            prediction=int(rng.random() < 0.4),
            probabilities={"0": 0.6, "1": 0.4},
            latency_ms=1.5,
            served_at=at,
        )
        label = ValidLabel(
            event_id=f"e{i}",
            entity_id=vec.entity_id,
            event_time=at,
            label=int(rng.random() < 0.4),
            ingested_at=at,
        )
        out.append(
            (
                vec.model_dump_json().encode(),
                pred.model_dump_json().encode(),
                label.model_dump_json().encode(),
            )
        )
    return out


def throughput(events: int) -> dict[str, Any]:
    """Records per second through the core with every detector on."""
    encoded = _encoded_events(events)
    core = MonitorCore(MonitoringSettings())
    start = time.perf_counter()
    for vec, pred, label in encoded:
        core.on_features(FeatureVector.model_validate_json(vec))
        for record in prediction_records(pred):  # as the monitor reads driftline.predictions
            core.on_prediction(record)
        core.on_label(ValidLabel.model_validate_json(label))
    seconds = time.perf_counter() - start
    return {
        "events": events,
        "records": 3 * events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds),
        "records_per_s": round(3 * events / seconds),
        "features_per_vector": 9,
        "note": "one event = its feature vector + prediction + label, JSON decoding included; "
        "single process, no Kafka I/O",
    }


def _messages_in(admin_port: int) -> int:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read()
    except OSError:
        return 0
    return sum(
        int(float(m.group(1)))
        for m in re.finditer(rb"driftline_messages_in_total\{[^}]*\} ([0-9.e+]+)", text)
    )


def service_throughput(events: int) -> dict[str, Any]:
    """The monitoring service as deployed: its own process, a real broker, every detector on.

    The three topics are filled first (a feature vector, a prediction and a
    label per event); the rate is how fast the service drains them.
    """
    import asyncio

    from aiokafka import AIOKafkaProducer
    from local_platform import local_platform

    from driftline.contracts.topics import FEATURES, LABELS_VALID, PREDICTIONS
    from driftline.devtools.infra import free_port
    from driftline.kafkaio import provision_topics
    from driftline.settings import KafkaSettings

    encoded = _encoded_events(events)

    async def fill(bootstrap: str) -> None:
        await provision_topics(KafkaSettings(bootstrap_servers=bootstrap))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
        await producer.start()
        for i, (vec, pred, label) in enumerate(encoded):
            key = f"c{i % 1000}".encode()
            await producer.send(FEATURES.name, vec, key=key)
            await producer.send(PREDICTIONS.name, pred, key=key)
            await producer.send(LABELS_VALID.name, label, key=key)
        await producer.flush()
        await producer.stop()

    with local_platform(redis=False) as platform:
        asyncio.run(fill(platform.bootstrap_servers))
        admin_port = free_port()
        env = {
            **os.environ,
            "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": platform.bootstrap_servers,
            "DRIFTLINE_MONITORING__ADMIN__PORT": str(admin_port),
            "DRIFTLINE_TELEMETRY__LOG_LEVEL": "WARNING",
        }
        log = (OUT.parent / "monitoring-service.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.monitoring"], env=env, stderr=log, stdout=log
        )
        try:
            total = 3 * events
            deadline = time.monotonic() + 600
            while _messages_in(admin_port) == 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the monitoring service did not start; see its log")
                time.sleep(0.05)
            t0, cpu0, n0 = time.perf_counter(), cpu_seconds(proc.pid), _messages_in(admin_port)
            while (n := _messages_in(admin_port)) < total:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the monitoring service stopped at {n} of {total}")
                time.sleep(0.1)
            seconds = time.perf_counter() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(30)
    done = n - n0
    return {
        "events": events,
        "records": done,
        "seconds": round(seconds, 2),
        "events_per_s": round(done / 3 / seconds),
        "records_per_s": round(done / seconds),
        "cpu_us_per_event": round(cpu / (done / 3) * 1e6, 1),
        "note": "python -m driftline.monitoring draining pre-filled driftline.features, "
        "driftline.predictions and driftline.labels.valid from a real broker; "
        "one event = its feature vector + prediction + label",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--service-events", type=int, default=60_000)
    parser.add_argument(
        "--story-seeds", type=int, default=5, help="seeds of the recurring and label-free suites"
    )
    args = parser.parse_args()
    report = evaluate(EvalConfig(seeds=args.seeds, processes=args.processes))
    print(render(report))
    # Issue 18's other suites, at the settings' defaults (as `driftline eval-drift` runs them).
    settings = load_settings()
    recurring = eval_recurring.run(
        args.story_seeds,
        eval_recurring.RecurringEvalConfig(
            restore_examples=settings.training.recurring.min_examples,
            min_score=settings.training.recurring.min_score,
        ),
    )
    print(eval_recurring.render(recurring))
    label_free = eval_label_free.run(
        args.story_seeds,
        config=eval_label_free.LabelFreeConfig.from_settings(settings.monitoring),
        processes=args.processes,
    )
    print(eval_label_free.render(label_free))
    result = {
        "eval": report,
        "recurring": recurring,
        "label_free": label_free,
        "throughput": throughput(args.events),
        "service_throughput": service_throughput(args.service_events),
    }
    print(json.dumps({k: result[k] for k in ("throughput", "service_throughput")}, indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
