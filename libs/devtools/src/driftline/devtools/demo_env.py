"""The environment of the services the demo runs against.

What services the demo starts are tuned to (:func:`demo_service_env`, and the
spec directory of :func:`demo_models_dir`), and :func:`isolated_env`: every
service on free ports with its state in one directory, against a broker and a
Redis of the caller's own (tests and benches run the demo that way).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from driftline.devtools.infra import free_ports

__all__ = ["demo_models_dir", "demo_service_env", "isolated_env", "isolated_platform_env"]


def demo_models_dir(models_dir: Path, model: str) -> Path | None:
    """The directory training must load specs from for the demo of ``model``.

    ``None`` when ``models_dir`` itself holds the spec (the River model: training's
    defaults are right).  A spec in a subdirectory (``examples/models/batch/`` holds
    ``loans-gbm``) is trained only when training is pointed there, so that the River
    demo's training never fits it; that subdirectory is returned.  ``None`` too when
    no spec of that name is found (serving may still know the model).
    """
    import yaml

    def holds(directory: Path) -> bool:
        # Only the names are read (validating a spec imports its framework): training
        # reports a broken spec when it loads it.
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and data.get("name") == model:
                return True
        return False

    if not models_dir.is_dir() or holds(models_dir):
        return None
    for sub in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if holds(sub):
            return sub.resolve()  # the services the demo starts may run elsewhere
    return None


def demo_service_env(
    drift_at: int, min_examples: int = 1000, models_dir: Path | None = None
) -> dict[str, str]:
    """Settings (as ``DRIFTLINE_*`` variables) for services the demo starts itself.

    ``drift_at`` is the event at which the scenario's concept changes.

    The defaults are sized for a long-running platform (a snapshot every 5,000
    labels, 3,600 labels of detector warm-up); a 12,000-event demo needs the
    first champion and the warm-up done well before the drift point, and no
    promotion of a scheduled snapshot just after it.  The
    retraining itself needs no tuning: monitoring asks at detection and training
    holds the request until the window after the drift holds enough labelled
    examples.  Variables already set in the environment win.  Services that were
    already running keep their settings.
    """
    # Each promotion re-baselines the monitor's error detector (a warm-up of
    # ``warmup`` outcomes after a lag of 400), so the last snapshot before the drift
    # comes early enough for it to be watching again at the drift, and the next one
    # well after the detection (by then a retrain request is pending and training
    # keeps that snapshot a challenger).
    snapshot_every = max(min_examples, min(5000, round(0.6 * drift_at)))
    warmup = max(200, min(3600, drift_at // 6))
    env = {
        "DRIFTLINE_TRAINING__SNAPSHOT_EVERY": str(snapshot_every),
        "DRIFTLINE_MONITORING__DETECTOR__WARMUP": str(warmup),
        # The live accuracy ops alert on (AccuracyBelowFloor) averages the last
        # accuracy_window labelled answers; at the demo's rate the drifted champion
        # serves for seconds, so the default 1,000 would average its misses away.
        "DRIFTLINE_MONITORING__ACCURACY_WINDOW": "200",
    }
    if models_dir is not None:
        # Training loads only the demo's model (see demo_models_dir).
        env["DRIFTLINE_TRAINING__MODELS_DIR"] = str(models_dir)
    return env


def isolated_env(
    *,
    bootstrap_servers: str,
    redis_host: str,
    redis_port: int,
    state_dir: Path,
    ports: Callable[[int], list[int]] = free_ports,
) -> dict[str, str]:
    """``DRIFTLINE_*`` variables for a demo on a broker and Redis of its own (tests, benches).

    Every service and the ops stack get ports from ``ports(n)`` (n free ports) and
    their state under ``state_dir``; ``DRIFTLINE_*`` variables of the calling
    environment are dropped so that nothing of another platform leaks in.
    """
    admin = ports(6)
    features_grpc, registry_grpc, serving_grpc = ports(3)
    ops = ports(7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=bootstrap_servers,
        DRIFTLINE_REDIS__HOST=redis_host,
        DRIFTLINE_REDIS__PORT=str(redis_port),
        DRIFTLINE_INFRA__STATE_DIR=str(state_dir),
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
        DRIFTLINE_INGESTION__ADMIN__PORT=str(admin[0]),
        DRIFTLINE_FEATURES__ADMIN__PORT=str(admin[1]),
        DRIFTLINE_FEATURES__GRPC_PORT=str(features_grpc),
        DRIFTLINE_TRAINING__ADMIN__PORT=str(admin[2]),
        DRIFTLINE_TRAINING__REGISTRY_TARGET=f"127.0.0.1:{registry_grpc}",
        DRIFTLINE_REGISTRY__ADMIN__PORT=str(admin[3]),
        DRIFTLINE_REGISTRY__GRPC_PORT=str(registry_grpc),
        DRIFTLINE_REGISTRY__ARTIFACT_DIR=str(state_dir / "artifacts"),
        DRIFTLINE_SERVING__ADMIN__PORT=str(admin[4]),
        DRIFTLINE_SERVING__GRPC_PORT=str(serving_grpc),
        DRIFTLINE_SERVING__FEATURES_TARGET=f"127.0.0.1:{features_grpc}",
        DRIFTLINE_SERVING__REGISTRY_TARGET=f"127.0.0.1:{registry_grpc}",
        DRIFTLINE_MONITORING__ADMIN__PORT=str(admin[5]),
        # the ops stack (`driftline up` / `demo` start it), on ports of its own too
        DRIFTLINE_INFRA__OPS__PROMETHEUS_PORT=str(ops[0]),
        DRIFTLINE_INFRA__OPS__ALERTMANAGER_PORT=str(ops[1]),
        DRIFTLINE_INFRA__OPS__ALERT_SINK_PORT=str(ops[2]),
        DRIFTLINE_INFRA__OPS__JAEGER_UI_PORT=str(ops[3]),
        DRIFTLINE_INFRA__OPS__JAEGER_QUERY_GRPC_PORT=str(ops[4]),
        DRIFTLINE_INFRA__OPS__JAEGER_OTLP_GRPC_PORT=str(ops[5]),
        DRIFTLINE_INFRA__OPS__JAEGER_OTLP_HTTP_PORT=str(ops[6]),
    )
    return env


def isolated_platform_env(
    state_dir: Path, ports: Callable[[int], list[int]] = free_ports
) -> dict[str, str]:
    """:func:`isolated_env` for a whole ``driftline up`` of its own: the broker, its
    controller and Redis on free ports too (tests and benches of the CLI)."""
    kafka_port, controller_port, redis_port = ports(3)
    env = isolated_env(
        bootstrap_servers=f"127.0.0.1:{kafka_port}",
        redis_host="127.0.0.1",
        redis_port=redis_port,
        state_dir=state_dir,
        ports=ports,
    )
    env["DRIFTLINE_KAFKA__CONTROLLER_PORT"] = str(controller_port)
    env["COLUMNS"] = "250"  # rich wraps at 80 columns when not on a terminal
    return env
