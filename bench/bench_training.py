"""Training benchmark → ``bench/out/training.json``.

1. Labeled examples/s through the label join + test-then-train learning of the
   example spec (``examples/models/loans.yaml``) on an Agrawal stream whose
   labels arrive 100 events late — in-process, no sockets.
2. Time from a retrain request to a registered candidate for a 20,000-example
   window: the window is produced to ``driftline.features`` /
   ``driftline.labels.valid`` on a real broker (a throwaway one on free ports,
   or ``DRIFTLINE_BENCH_BOOTSTRAP``), replayed by the training replay consumer,
   trained, evaluated and registered into a real registry running in this
   process.

Usage: ``uv run python bench/bench_training.py [--examples 20000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from river import stream
from river.datasets import synth

from driftline.contracts.messages import FeatureVector, RetrainRequest, ValidLabel
from driftline.contracts.topics import FEATURES, LABELS_VALID
from driftline.devtools.infra import free_port
from driftline.kafkaio import make_producer, provision_topics, send_model, wait_for_kafka
from driftline.settings import PlatformSettings, load_settings
from driftline.specs import ModelSpec, load_model_spec
from driftline.training.candidates import InMemorySink
from driftline.training.core import CoreConfig, TrainingCore
from driftline.training.label_join import Position

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "training.json"
DELAY = 100


def _spec(run: str) -> ModelSpec:
    base = load_model_spec(ROOT / "examples" / "models" / "loans.yaml")
    return ModelSpec.model_validate(
        base.model_dump() | {"name": f"bench-{run}", "featureset": f"bench_{run}"}
    )


def _records(spec: ModelSpec, n: int, t0: datetime) -> list[FeatureVector | ValidLabel]:
    out: list[FeatureVector | ValidLabel] = []
    for i, x, y in stream.simulate_qa(synth.Agrawal(seed=4).take(n), None, DELAY):
        at = t0 + timedelta(seconds=i)
        if y is None:
            out.append(FeatureVector(
                event_id=f"{spec.name}-{i}", entity_id=f"c{i % 500}", event_time=at,
                featureset=spec.featureset, featureset_version=1, values=x, produced_at=at,
            ))  # fmt: skip
        else:
            out.append(ValidLabel(
                event_id=f"{spec.name}-{i}", entity_id=f"c{i % 500}", event_time=at, label=y,
                ingested_at=at,
            ))  # fmt: skip
    return out


def bench_online(n: int) -> dict[str, Any]:
    spec = _spec(uuid.uuid4().hex[:6])
    records = _records(spec, n, datetime.now(UTC))
    core = TrainingCore(spec, InMemorySink(), CoreConfig(snapshot_every=10**9))
    start = time.perf_counter()
    for k, r in enumerate(records):
        if isinstance(r, FeatureVector):
            core.on_vector(r, Position("f", 0, k))
        else:
            core.on_label(r, Position("l", 0, k))
    elapsed = time.perf_counter() - start
    return {
        "examples": core.learner.learned,
        "label_delay_events": DELAY,
        "seconds": round(elapsed, 3),
        "labeled_examples_per_s": round(core.learner.learned / elapsed, 1),
        "prequential_accuracy": round(core.learner.prequential, 4),
    }


async def bench_retrain(settings: PlatformSettings, n: int) -> dict[str, Any]:
    from driftline.registry.service import RegistryService
    from driftline.registry_client import RegistryClient
    from driftline.training.registry_sink import RegistrySink
    from driftline.training.replay import KafkaReplay

    await wait_for_kafka(settings.kafka, timeout_s=5)
    await provision_topics(settings.kafka)
    run = uuid.uuid4().hex[:6]
    spec = _spec(run)
    t0 = datetime.now(UTC) - timedelta(days=1)
    producer = make_producer(settings.kafka, "bench-training")
    await producer.start()
    try:
        for r in _records(spec, n, t0):
            topic = FEATURES if isinstance(r, FeatureVector) else LABELS_VALID
            await send_model(producer, topic, r.entity_id, r)
        await producer.flush()
    finally:
        await producer.stop()
    with tempfile.TemporaryDirectory() as tmp:
        reg_settings = settings.model_copy(
            update={"registry": settings.registry.model_copy(update={
                "grpc_port": 0, "admin": settings.registry.admin.model_copy(
                    update={"port": free_port()}), "artifact_dir": Path(tmp),
            })}
        )  # fmt: skip
        registry = RegistryService(reg_settings)
        await registry.start()
        client = RegistryClient(
            f"127.0.0.1:{registry.grpc_port}",
            timeout_s=60,
            security=reg_settings.security,
            identity="training",
        )
        try:
            core = TrainingCore(spec, RegistrySink(client, reg_settings.registry.signing_key))
            request = RetrainRequest(
                request_id=f"bench-{run}", model_name=spec.name, reason="bench",
                since_event_time=t0, requested_at=datetime.now(UTC),
            )  # fmt: skip
            start = time.perf_counter()
            outcome = await core.retrain(request, KafkaReplay(settings.kafka))
            elapsed = time.perf_counter() - start
        finally:
            await client.close()
            await registry.stop()
    assert outcome is not None
    return {
        "window_examples": n,
        "seconds_request_to_registered": round(elapsed, 3),
        "version": outcome.version.version,
        "trained_on": outcome.version.lineage.examples if outcome.version.lineage else None,
        "holdout_accuracy": round(outcome.version.metrics.get("accuracy", 0.0), 4),
        "registry": "real registry service in-process, over gRPC",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000)
    args = parser.parse_args()
    report: dict[str, Any] = {"online_join_learn": bench_online(args.examples)}
    print(json.dumps(report, indent=2))
    from local_platform import local_platform  # bench/ is on sys.path when run as a script

    # A throwaway broker of its own, as every benchmark, unless one is named.
    with local_platform(redis=False) as platform:
        settings = load_settings(kafka={"bootstrap_servers": platform.bootstrap_servers})
        report["retrain"] = asyncio.run(bench_retrain(settings, args.examples))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report["retrain"], indent=2))


if __name__ == "__main__":
    main()
