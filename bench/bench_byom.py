"""Bring-your-own-model benchmark: Driftline vs Seldon MLServer 1.7.1 on the same fitted models.

Two scikit-learn models are fitted once on River's Agrawal stream (the loans
feature set's nine raw fields): a ``Pipeline(StandardScaler, LogisticRegression)``
and a ``HistGradientBoostingClassifier``. Each is saved with joblib and served,
side by side in one run, by

* Driftline: the real registry, features and serving services (``python -m
  driftline.<service>``) over a real Kafka broker and redis-server, the models
  registered through ``driftline.registry_client.register_model`` and promoted;
* Seldon MLServer 1.7.1 with ``mlserver-sklearn`` from the same joblib file, in
  its own virtualenv (``~/.cache/driftline/mlserver-1.7.1``, created with ``uv``
  on first use: MLServer pins ``uvloop<0.22`` and its own protobuf), twice: with
  its default settings (``parallel_workers=1``: inference in a worker process)
  and with ``parallel_workers=0`` (inference in the server process, its fastest
  single-process setting).

The client is ``tritonclient`` (the reference OIP client, in its own process),
the same code for every server: ``ModelInfer`` with one FP32 ``[256, 9]`` input,
asking for the predicted label and every class's probability (MLServer:
``predict`` and ``predict_proba``; Driftline: ``predict`` and
``probabilities``), at concurrency 1 and 4. The servers take turns, round by
round, so a slow spell of the shared machine falls on all of them alike; the
figure is the ratio of rows/s. Before timing, the client checks that every server
returns the same labels for the same rows.

Measured beside it, in the same run: ``Predict`` at concurrency 1 (features
fetched from the feature store) of each scikit-learn model against a River
Hoeffding tree on the same features, taking turns in ``2 * rounds`` rounds before
MLServer starts (the logistic regression answers through its compiled single-row
path, ``serving.compile_models``; the gradient-boosted trees through scikit-learn);
serving's prediction log (rows written and dropped over the load phases, from
``/metrics``); and the time from promoting a version to serving answering with it,
for a ~10 MB random forest and for the
River model. Writes ``bench/out/byom.json``.

    uv run python bench/bench_byom.py [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "byom.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import (  # noqa: E402 - same online store, same security
    ENTITIES,
    SECURITY,
    _metric,
    fill_online_store,
)
from local_platform import serving_stack_env, stop_processes, wait_http  # noqa: E402
from measure import cpu_seconds, pct  # noqa: E402 - bench/ holds the helpers

from driftline.security import grpc_tls  # noqa: E402

SIGNING_KEY = "bench-signing-key"
FIELDS = (
    "salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan",
)  # fmt: skip
"""The models' inputs, in matrix column order: the loans feature set's raw fields."""
ROWS = 256
MLSERVER_VERSION = "1.7.1"
MLSERVER_ENV = Path.home() / ".cache" / "driftline" / f"mlserver-{MLSERVER_VERSION}"
SKLEARN_MODELS = ("logreg", "hgb")
RIVER_MODEL = "loans-river"
FOREST_MODEL = "loans-forest"


def driftline_name(kind: str) -> str:
    return f"loans-{kind}"


# -- the models -------------------------------------------------------------------------


def training_data(n: int, seed: int, perturbation: float = 0.0) -> tuple[Any, Any]:
    """``n`` Agrawal rows as a float64 ``[n, 9]`` matrix (``FIELDS`` order) and labels."""
    import numpy as np
    from river.datasets import synth

    xs, ys = [], []
    for x, y in synth.Agrawal(seed=seed, perturbation=perturbation).take(n):
        xs.append([float(x[f]) for f in FIELDS])
        ys.append(int(y))
    return np.asarray(xs), np.asarray(ys)


def fit_models() -> dict[str, Any]:
    """The two scikit-learn models every server serves (fitted once, on arrays)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = training_data(20_000, seed=1)
    logreg = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))])
    hgb = HistGradientBoostingClassifier(max_iter=100, random_state=0)
    return {"logreg": logreg.fit(x, y), "hgb": hgb.fit(x, y)}


def fit_forest(seed: int) -> Any:
    """A random forest whose joblib artifact is about 10 MB (the promotion figure)."""
    from sklearn.ensemble import RandomForestClassifier

    # Noisy rows grow deep trees: 40 of them pickle to about 10 MB.
    x, y = training_data(20_000, seed=seed, perturbation=0.1)
    return RandomForestClassifier(n_estimators=40, random_state=seed, n_jobs=1).fit(x, y)


def river_model() -> Any:
    from river import tree
    from river.datasets import synth

    model = tree.HoeffdingTreeClassifier(grace_period=100)
    for x, y in synth.Agrawal(seed=1).take(5000):
        model.learn_one(x, y)
    return model


# -- MLServer ---------------------------------------------------------------------------


def _uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(found).exists():
        raise SystemExit("uv is needed to build MLServer's virtualenv: run `make uv` first")
    return found


def ensure_mlserver() -> Path:
    """MLServer's ``mlserver`` command, installing it into its own virtualenv once.

    The scikit-learn there is the one this environment has, so both servers load
    the same joblib file with the same library.
    """
    import sklearn

    exe = MLSERVER_ENV / "bin" / "mlserver"
    python = MLSERVER_ENV / "bin" / "python"
    want = sklearn.__version__
    if exe.exists():
        probe = subprocess.run(
            [str(python), "-c", "import sklearn, mlserver; print(sklearn.__version__)"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == want:
            return exe
    print(f"installing MLServer {MLSERVER_VERSION} into {MLSERVER_ENV} …", flush=True)
    uv = _uv()
    subprocess.run([uv, "venv", "-q", "--python", "3.11", str(MLSERVER_ENV)], check=True)
    subprocess.run(
        [
            *(uv, "pip", "install", "-q", "--python", str(python)),
            f"mlserver=={MLSERVER_VERSION}",
            f"mlserver-sklearn=={MLSERVER_VERSION}",
            "uvloop<0.22",  # MLServer 1.7.1 does not start on uvloop 0.22
            f"scikit-learn=={want}",
        ],
        check=True,
    )
    return exe


def write_mlserver_repo(
    root: Path, artifacts: dict[str, Path], ports: tuple[int, int, int], parallel_workers: int
) -> None:
    """An MLServer model repository: ``settings.json`` and one folder per model."""
    grpc_port, http_port, metrics_port = ports
    root.mkdir(parents=True)
    (root / "settings.json").write_text(
        json.dumps(
            {
                "grpc_port": grpc_port,
                "http_port": http_port,
                "metrics_port": metrics_port,
                "parallel_workers": parallel_workers,
                "debug": False,
            }
        )
    )
    for kind, path in artifacts.items():
        folder = root / kind
        folder.mkdir()
        shutil.copy(path, folder / "model.joblib")
        (folder / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": kind,
                    "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./model.joblib", "version": "1"},
                }
            )
        )


# -- the client (its own process: tritonclient's protobuf symbols clash with ours) -------


async def client_main(plan: dict[str, Any]) -> dict[str, Any]:
    """Run ``plan``: check agreement, then timed ModelInfer rounds over every target."""
    import numpy as np
    import tritonclient.grpc.aio as tc

    x, _ = training_data(ROWS, seed=7)
    matrix = x.astype(np.float32)
    targets: list[dict[str, Any]] = plan["targets"]
    clients = {t["key"]: tc.InferenceServerClient(t["url"]) for t in targets}

    def request(t: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        inp = tc.InferInput("input-0", [ROWS, len(FIELDS)], "FP32")
        inp.set_data_from_numpy(matrix)
        outs = [tc.InferRequestedOutput(name) for name in t["outputs"]]
        return [inp], outs

    labels: dict[str, list[str]] = {}
    for t in targets:
        inputs, outputs = request(t)
        result = await clients[t["key"]].infer(t["model"], inputs, outputs=outputs)
        got = result.as_numpy(t["outputs"][0])
        labels[t["key"]] = [
            (v.decode() if isinstance(v, bytes) else str(int(v))) for v in got.reshape(-1)
        ]
    agreement: dict[str, float] = {}
    for t in targets:
        peer = t.get("same_as")
        if peer:
            a, b = labels[t["key"]], labels[peer]
            agreement[t["key"]] = sum(p == q for p, q in zip(a, b, strict=True)) / len(a)

    stats: dict[str, dict[int, dict[str, Any]]] = {
        t["key"]: {c: {"lat": [], "seconds": 0.0, "cpu": 0.0, "errors": 0} for c in plan["conc"]}
        for t in targets
    }

    async def load(t: dict[str, Any], concurrency: int, seconds: float) -> None:
        client, st = clients[t["key"]], stats[t["key"]][concurrency]
        inputs, outputs = request(t)
        end = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < end:
                started = time.perf_counter()
                try:
                    await client.infer(t["model"], inputs, outputs=outputs)
                except Exception:  # counted: a failed request is not a measured one
                    st["errors"] += 1
                    continue
                st["lat"].append(time.perf_counter() - started)

        pids = t["pids"]
        before = sum(cpu_seconds(p) for p in pids)
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        st["seconds"] += time.perf_counter() - began
        st["cpu"] += sum(cpu_seconds(p) for p in pids) - before

    for t in targets:  # warm every path before timing
        await load(t, 1, 1.0)
        for c in plan["conc"]:
            stats[t["key"]][c] = {"lat": [], "seconds": 0.0, "cpu": 0.0, "errors": 0}
    for k in range(plan["rounds"]):
        order = targets if k % 2 == 0 else list(reversed(targets))
        for c in plan["conc"]:
            for t in order:
                await load(t, c, plan["seconds"])
        print(f"client: round {k + 1}/{plan['rounds']} done", file=sys.stderr, flush=True)
    for client in clients.values():
        await client.close()
    result: dict[str, Any] = {"agreement": agreement, "targets": {}}
    for key, by_c in stats.items():
        result["targets"][key] = {
            str(c): {
                "requests": len(st["lat"]),
                "rows_per_s": round(len(st["lat"]) * ROWS / st["seconds"], 1),
                "p50_ms": round(statistics.median(st["lat"]) * 1000, 3) if st["lat"] else None,
                "p99_ms": round(pct(st["lat"], 0.99) * 1000, 3) if st["lat"] else None,
                "server_cpu_us_per_row": round(st["cpu"] / max(1, len(st["lat"]) * ROWS) * 1e6, 3),
                "errors": st["errors"],
            }
            for c, st in by_c.items()
        }
    return result


# -- Driftline's side -------------------------------------------------------------------


async def _served_version(stub: Any, model: str) -> int | None:
    """The version serving answers ``model``'s Predict with (the champion), if any."""
    from driftline.v1 import predictor_pb2

    request = predictor_pb2.PredictRequest(entity_id="bench-0", model_name=model)
    try:
        reply = await stub.Predict(request, timeout=2)
    except grpc.aio.AioRpcError:
        return None
    return int(reply.model_version)


async def wait_served(target: str, model: str, version: int, timeout_s: float = 120) -> float:
    """Seconds until serving answers ``model``'s Predict with ``version`` (polled every 10 ms)."""
    from driftline.v1 import predictor_pb2_grpc

    async with grpc_tls.channel(target, SECURITY, "admin") as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            if await _served_version(stub, model) == version:
                return time.perf_counter() - started
            await asyncio.sleep(0.01)
    raise SystemExit(f"serving did not serve {model} v{version} within {timeout_s:.0f} s")


async def register(
    registry: str, name: str, model: Any, framework: str | None = None, promote: bool = True
) -> tuple[int, float]:
    """Register ``model`` (and promote it): its version and when the promotion returned."""
    from driftline.registry_client import RegistryClient
    from driftline.registry_client.external import register_model

    async with RegistryClient(registry, security=SECURITY, identity="admin") as client:
        done = await register_model(
            client,
            name,
            model,
            featureset="loans",
            task="binary",
            features=list(FIELDS),
            framework=framework,
            promote="champion" if promote else None,
            trained_on="bench: Agrawal seed 1",
            actor="bench",
            featuresets=ROOT / "examples" / "featuresets",
        )
    return done.version.version, time.perf_counter()


async def register_river(registry: str) -> tuple[int, float]:
    from driftline.registry_client import RegistryClient

    spec = {"featureset": "loans", "task": "binary", "features": list(FIELDS)}
    async with RegistryClient(registry, security=SECURITY, identity="admin") as client:
        version = await client.register(RIVER_MODEL, model=river_model(), spec=spec, actor="bench")
        await client.set_alias(
            RIVER_MODEL, "champion", version.version, actor="bench", reason="byom bench"
        )
    return version.version, time.perf_counter()


async def predict_c1(target: str, models: list[str], n: int, rounds: int) -> dict[str, Any]:
    """Sequential Predicts (features fetched by serving) to each model, taking turns."""
    from driftline.v1 import predictor_pb2, predictor_pb2_grpc

    lat: dict[str, list[float]] = {m: [] for m in models}
    async with grpc_tls.channel(target, SECURITY, "admin") as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        for m in models:
            for i in range(200):
                await stub.Predict(
                    predictor_pb2.PredictRequest(entity_id=f"bench-{i}", model_name=m), timeout=5
                )
        per_round = max(1, n // rounds)
        for k in range(rounds):
            for m in models if k % 2 == 0 else reversed(models):
                times = lat[m]
                for i in range(per_round):
                    r = predictor_pb2.PredictRequest(
                        entity_id=f"bench-{(k * per_round + i) % ENTITIES}", model_name=m
                    )
                    t = time.perf_counter()
                    await stub.Predict(r, timeout=5)
                    times.append(time.perf_counter() - t)
    return {
        m: {
            "requests": len(t),
            "p50_ms": round(statistics.median(t) * 1000, 3),
            "p99_ms": round(pct(t, 0.99) * 1000, 3),
        }
        for m, t in lat.items()
    }


async def promotion_times(registry: str, target: str, repeats: int) -> dict[str, Any]:
    """Promotion -> served, for a ~10 MB forest and for the small River model, in turns."""
    import joblib

    forest_s: list[float] = []
    river_s: list[float] = []
    sizes: list[int] = []
    forests = [fit_forest(seed) for seed in range(1, repeats + 1)]
    for forest in forests:
        buf = io.BytesIO()
        joblib.dump(forest, buf)
        sizes.append(len(buf.getvalue()))
    for forest in forests:
        version, _ = await register(registry, FOREST_MODEL, forest)
        forest_s.append(await wait_served(target, FOREST_MODEL, version))
        version, _ = await register_river(registry)
        river_s.append(await wait_served(target, RIVER_MODEL, version))
    return {
        "forest_artifact_mb": round(statistics.median(sizes) / 1e6, 1),
        "forest_promotion_to_serving_s": [round(s, 3) for s in forest_s],
        "forest_median_s": round(statistics.median(forest_s), 3),
        "river_promotion_to_serving_s": [round(s, 3) for s in river_s],
        "river_median_s": round(statistics.median(river_s), 3),
    }


async def measure(args: argparse.Namespace, bootstrap: str, redis_port: int) -> dict[str, Any]:
    import joblib

    from driftline.devtools.infra import free_ports

    mlserver = ensure_mlserver()
    ports = free_ports(12)
    reg_port, reg_admin, fs_port, fs_admin, grpc_port, admin_port = ports[:6]
    ml_default, ml_inproc = ports[6:9], ports[9:12]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="driftline-bench-byom-"))
    log = OUT.parent / "byom-bench.log"
    out = log.open("wb")
    print("fitting the models …", flush=True)
    models = fit_models()
    files: dict[str, Path] = {}
    for kind, model in models.items():
        files[kind] = work / f"{kind}.joblib"
        joblib.dump(model, files[kind])
    await fill_online_store(f"redis://127.0.0.1:{redis_port}/0")
    env = serving_stack_env(
        bootstrap=bootstrap,
        redis_port=redis_port,
        features=(fs_port, fs_admin),
        registry=(reg_port, reg_admin),
        serving=(grpc_port, admin_port),
        artifact_dir=work / "artifacts",
        signing_key=SIGNING_KEY,
    )
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], environ: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=environ, stdout=out, stderr=out)
        procs.append(proc)
        return proc

    registry_target, target = f"127.0.0.1:{reg_port}", f"127.0.0.1:{grpc_port}"
    try:
        registry = start([sys.executable, "-m", "driftline.registry"], env)
        features = start([sys.executable, "-m", "driftline.features"], env)
        wait_http(f"http://127.0.0.1:{reg_admin}/readyz", registry, log, "registry")
        wait_http(f"http://127.0.0.1:{fs_admin}/readyz", features, log, "features")
        # Serving is ready once it serves a champion: the River model's, registered first.
        river_version, _ = await register_river(registry_target)
        serving = start([sys.executable, "-m", "driftline.serving"], env)
        wait_http(f"http://127.0.0.1:{admin_port}/readyz", serving, log, "serving")
        await wait_served(target, RIVER_MODEL, river_version)
        for kind, model in models.items():
            version, _ = await register(registry_target, driftline_name(kind), model)
            await wait_served(target, driftline_name(kind), version)
        print("Driftline ready; Predict c=1 …", flush=True)
        names = [RIVER_MODEL, *(driftline_name(k) for k in SKLEARN_MODELS)]
        # Before MLServer starts: this figure compares Driftline's models with each other,
        # and MLServer's idle processes would only add noise to it.
        predict = await predict_c1(target, names, args.requests, args.rounds * 2)
        print(f"Predict c=1 {predict}", flush=True)
        ml = {}
        for key, ml_ports, workers in (
            ("mlserver", ml_default, 1),
            ("mlserver_inproc", ml_inproc, 0),
        ):
            repo = work / key
            write_mlserver_repo(repo, files, ml_ports, workers)
            ml[key] = (start([str(mlserver), "start", str(repo)], None), ml_ports)
        for key, (proc, ml_ports) in ml.items():
            for kind in files:
                wait_http(f"http://127.0.0.1:{ml_ports[1]}/v2/models/{kind}/ready", proc, log, key)
        print("MLServer ready …", flush=True)
        await asyncio.sleep(1.5)  # the Predict phase's last rows reach Kafka first
        answered_before = _metric(admin_port, "driftline_serving_predictions_total")
        written_before = _metric(admin_port, "driftline_serving_prediction_log_written_total")
        dropped_before = _metric(admin_port, "driftline_serving_prediction_log_dropped_total")

        def mlserver_pids(proc: subprocess.Popen[bytes]) -> list[int]:
            # parallel_workers=1 runs inference in a child process: count its CPU too.
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            kids = [int(p) for p in children.read_text().split()] if children.exists() else []
            return [proc.pid, *kids]

        targets = []
        for kind in SKLEARN_MODELS:
            targets.append(
                {
                    "key": f"driftline/{kind}",
                    "url": target,
                    "model": driftline_name(kind),
                    "outputs": ["predict", "probabilities"],
                    "pids": [serving.pid],
                }
            )
            for key, (proc, ml_ports) in ml.items():
                targets.append(
                    {
                        "key": f"{key}/{kind}",
                        "url": f"127.0.0.1:{ml_ports[0]}",
                        "model": kind,
                        "outputs": ["predict", "predict_proba"],
                        "pids": mlserver_pids(proc),
                        "same_as": f"driftline/{kind}",
                    }
                )
        plan = {
            "targets": targets,
            "conc": args.concurrency,
            "rounds": args.rounds,
            "seconds": args.seconds,
        }
        print(f"ModelInfer: {len(targets)} targets x {args.concurrency} …", flush=True)
        client = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--role", "client"],
            input=json.dumps(plan),
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if client.returncode != 0:
            raise SystemExit(f"the tritonclient client failed:\n{client.stderr[-3000:]}")
        infer = json.loads(client.stdout)
        await asyncio.sleep(1.5)  # let the log writer settle before reading its counters
        log_rows = {
            "rows_answered": _metric(admin_port, "driftline_serving_predictions_total")
            - answered_before,
            "rows_written": _metric(admin_port, "driftline_serving_prediction_log_written_total")
            - written_before,
            "rows_dropped": _metric(admin_port, "driftline_serving_prediction_log_dropped_total")
            - dropped_before,
        }
        print(f"prediction log {log_rows}", flush=True)
        promotion = await promotion_times(registry_target, target, args.promotions)
        print(f"promotion {promotion}", flush=True)
    finally:
        stop_processes(procs)
        out.close()
        shutil.rmtree(work, ignore_errors=True)
    ratios: dict[str, dict[str, float]] = {}
    for kind in SKLEARN_MODELS:
        ours = infer["targets"][f"driftline/{kind}"]
        for key in ("mlserver", "mlserver_inproc"):
            peer = infer["targets"][f"{key}/{kind}"]
            ratios[f"{kind} vs {key}"] = {
                c: round(ours[c]["rows_per_s"] / peer[c]["rows_per_s"], 2) for c in ours
            }
    river_p50 = predict[RIVER_MODEL]["p50_ms"]
    predict_ratio = {
        k: round(predict[driftline_name(k)]["p50_ms"] / river_p50, 3) for k in SKLEARN_MODELS
    }
    best = min(min(r.values()) for k, r in ratios.items() if "vs mlserver" in k)
    return {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine_cores": os.cpu_count(),
        "setup": (
            "Driftline (registry, features, serving; Kafka, redis-server) and Seldon MLServer "
            f"{MLSERVER_VERSION} + mlserver-sklearn (default settings, and parallel_workers=0) "
            "serving the same joblib files; one tritonclient process as the client; "
            f"ModelInfer with one FP32 [{ROWS}, 9] input, label + probabilities asked for"
        ),
        "models": {
            "logreg": "Pipeline(StandardScaler, LogisticRegression), 20,000 Agrawal rows",
            "hgb": "HistGradientBoostingClassifier(max_iter=100), 20,000 Agrawal rows",
        },
        "label_agreement_with_driftline": infer["agreement"],
        "model_infer": infer["targets"],
        "rows_per_s_ratio_driftline_to_mlserver": ratios,
        "predict_c1": predict,
        "predict_c1_p50_ratio_to_river": predict_ratio,
        "prediction_log": log_rows,
        "promotion": promotion,
        "targets": {
            "model_infer_256_rows>=1.5x_mlserver_default": best >= 1.5,
            "predict_c1_sklearn_within_10pct_of_river": all(
                r <= 1.10 for r in predict_ratio.values()
            ),
            "prediction_log_dropped==0": log_rows["rows_dropped"] == 0,
            "labels_agree": all(v == 1.0 for v in infer["agreement"].values()),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--role",
        choices=["bench", "client"],
        default="bench",
        help="client: the tritonclient load process (reads its plan on stdin)",
    )
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="length of one target's load phase in a round"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of turns over the servers")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 4],
        help="ModelInfer concurrencies to measure",
    )
    parser.add_argument("--requests", type=int, default=3000, help="Predict c=1 requests per model")
    parser.add_argument("--promotions", type=int, default=3, help="promotions timed per model")
    args = parser.parse_args()
    if args.role == "client":
        plan = json.loads(sys.stdin.read())
        print(json.dumps(asyncio.run(client_main(plan))))
        return
    from local_platform import local_platform

    with local_platform() as platform:
        result = asyncio.run(measure(args, platform.bootstrap_servers, platform.redis_port))
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
