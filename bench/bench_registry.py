"""Registry round trip: register + download + verify of a ~1 MB artifact, and registering
~10 MB models trained elsewhere (issue 15).

Runs a registry replica in-process over a real gRPC socket against a throwaway
Kafka broker (or ``--bootstrap`` / ``DRIFTLINE_BENCH_BOOTSTRAP`` for a running one)
and writes ``bench/out/registry.json``.

The 10 MB figures register a scikit-learn random forest (``sklearn-pickle``) and an
ONNX conversion of one (``onnx``), each ~10 MB, with a spec checked against the
``loans`` feature set: upload in chunks, the registry's checks (the pickle's opcodes
read, the ONNX graph parsed and checked — nothing executed), hashing, signing,
storing and the ``acks=all`` write and read-back of the event.  ``check_ms`` is the
registry's checks alone, timed in-process on the same bytes.

    uv run python bench/bench_registry.py --rounds 20 --large-rounds 5
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
from typing import Any

from local_platform import local_platform  # bench/ is on sys.path when run as a script

from driftline.artifacts import load_model
from driftline.devtools.infra import free_port
from driftline.registry.admission import admit
from driftline.registry.service import RegistryService
from driftline.registry_client import RegistryClient
from driftline.settings import PlatformSettings

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out" / "registry.json"
KEY = "bench-signing-key"
FEATURESETS = ROOT / "examples" / "featuresets"
FEATURES = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"]
LARGE = 10_000_000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _loans(n: int = 20_000) -> tuple[Any, Any]:
    """Agrawal rows with 15 % of the labels flipped, so the trees grow large."""
    import numpy as np
    from river.datasets import synth

    rows, ys = [], []
    for x, y in synth.Agrawal(seed=3, perturbation=0.2).take(n):
        rows.append([float(x[f]) for f in FEATURES])
        ys.append(int(y))
    labels = np.array(ys)
    flip = np.random.default_rng(0).random(len(labels)) < 0.15
    return np.array(rows), np.where(flip, 1 - labels, labels)


def large_models() -> dict[str, tuple[str, Any, int]]:
    """``{format: (framework, model, bytes)}``: a random forest grown tree by tree until its
    pickle is ~10 MB, and an ONNX conversion of a forest sized to ~10 MB."""
    import pickle

    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    x, y = _loans()
    forest = RandomForestClassifier(n_estimators=2, random_state=0, warm_start=True)
    forest.fit(x, y)
    while len(pickle.dumps(forest)) < LARGE:
        forest.n_estimators += 1
        forest.fit(x, y)
    sample = x[:1].astype(np.float32)
    probe = to_onnx(forest, sample, options={"zipmap": False}).ByteSize()
    trees = max(1, round(LARGE * forest.n_estimators / probe))
    onnx_forest = RandomForestClassifier(n_estimators=trees, random_state=1).fit(x, y)
    proto = to_onnx(onnx_forest, sample, options={"zipmap": False})
    return {
        "sklearn-pickle": ("sklearn", forest, len(pickle.dumps(forest))),
        "onnx": ("onnx", proto, proto.ByteSize()),
    }


async def register_large(
    client: RegistryClient, service: RegistryService, rounds: int
) -> dict[str, object]:
    """Register each ~10 MB model ``rounds`` times (distinct bytes each round)."""
    from driftline.registry_client.external import prepare_object, register_prepared, spec_for

    out: dict[str, object] = {}
    for fmt, (framework, model, _) in large_models().items():
        name = f"bench-large-{framework}-{uuid.uuid4().hex[:6]}"
        spec = spec_for(
            name, featureset="loans", task="binary", framework=framework, features=FEATURES
        )
        register_s: list[float] = []
        check_s: list[float] = []
        size = 0
        for i in range(rounds):
            # A different artifact each round, as each retrain is: a marker attribute on
            # the estimator, the doc string of the ONNX graph.
            if framework == "onnx":
                model.doc_string = f"bench round {i}"
            else:
                model.bench_round_ = i
            prepared = prepare_object(spec, model)
            size = len(prepared.data)
            t0 = time.perf_counter()
            done = await register_prepared(client, prepared)
            register_s.append(time.perf_counter() - t0)
            assert done.version.version == i + 1 and done.version.size_bytes == size
            t1 = time.perf_counter()
            admit(
                name,
                framework=framework,
                artifact_format=prepared.artifact_format,
                spec=prepared.spec.model_dump(mode="json"),
                data=prepared.data,
                tags=prepared.tags,
                library_versions=prepared.library_versions,
                featuresets=service.core.featuresets,
            )
            check_s.append(time.perf_counter() - t1)
        out[fmt] = {
            "artifact_bytes": size,
            "rounds": rounds,
            "register_ms": {
                "p50": round(statistics.median(register_s) * 1000, 1),
                "max": round(max(register_s) * 1000, 1),
                "mean": round(statistics.fmean(register_s) * 1000, 1),
            },
            "check_ms_p50": round(statistics.median(check_s) * 1000, 1),
            "register_mb_per_s": round(size / 1e6 / statistics.median(register_s), 1),
        }
    return out


async def run(bootstrap: str, rounds: int, size: int, large_rounds: int = 5) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = PlatformSettings(
            kafka={"bootstrap_servers": bootstrap, "startup_wait_s": 10},
            registry={
                "grpc_port": 0,
                "admin": {"port": free_port()},
                "artifact_dir": tmp,
                "signing_key": KEY,
                "instance_id": f"bench-{uuid.uuid4().hex[:6]}",
                "featuresets_dir": str(FEATURESETS),
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
            async with RegistryClient(
                f"127.0.0.1:{service.grpc_port}", security=settings.security, identity="admin"
            ) as client:
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
                large = await register_large(client, service, large_rounds) if large_rounds else {}
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
        "register_10mb": large,
        "note": "one process, loopback; register includes the acks=all write and read-back; "
        "register_10mb: upload, the registry's checks (check_ms_p50 alone), hash, sign, store, "
        "log write and read-back of a ~10 MB model trained elsewhere",
    }


def main() -> None:
    """Parse arguments, run, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="an already running broker")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size", type=int, default=1_000_000, help="artifact bytes")
    parser.add_argument(
        "--large-rounds", type=int, default=5, help="registrations of each ~10 MB model (0: none)"
    )
    args = parser.parse_args()
    if args.bootstrap:
        report = asyncio.run(run(args.bootstrap, args.rounds, args.size, args.large_rounds))
    else:
        with local_platform(redis=False) as platform:
            report = asyncio.run(
                run(platform.bootstrap_servers, args.rounds, args.size, args.large_rounds)
            )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
