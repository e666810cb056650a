"""Drift benchmark: eval-drift at 20 seeds, and the monitor core's throughput.

Writes ``bench/out/drift.json``:

* ``eval``: per synthetic stream and detector (the retraining policy and each
  River detector alone) the detection delay (median, p90), misses, false alarms
  and false alarms per 1,000 stationary events, plus the issue-7 targets met or
  not;
* ``throughput``: records per second :class:`MonitorCore` sustains with every
  detector on (per-feature ADWIN, KSWIN on every 100th value, PSI / KS / JS
  windows, prediction drift, the label join and the error-rise detector),
  JSON decoding included: a feature vector, a prediction and a label per event.

Run: ``uv run python bench/bench_drift.py [--seeds 20] [--events 30000]``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from driftline.contracts.messages import FeatureVector, PredictionRecord, ValidLabel
from driftline.monitoring.core import MonitorCore
from driftline.monitoring.eval_drift import EvalConfig, evaluate, render
from driftline.settings import MonitoringSettings

OUT = Path(__file__).resolve().parent / "out" / "drift.json"
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
        core.on_prediction(PredictionRecord.model_validate_json(pred))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    report = evaluate(EvalConfig(seeds=args.seeds, processes=args.processes))
    print(render(report))
    result = {"eval": report, "throughput": throughput(args.events)}
    print(json.dumps(result["throughput"], indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
