"""Wiring: settings → cores, Kafka loops, registry, admin endpoints."""

from __future__ import annotations

import asyncio
import logging

from driftline.contracts.errors import DriftlineError, UnavailableError
from driftline.kafkaio import provision_topics, wait_for_kafka
from driftline.registry_client import RegistryClient
from driftline.runtime import Health, build_admin_app, serve_http
from driftline.settings import PlatformSettings, TrainingSettings
from driftline.specs import SpecError, load_model_specs
from driftline.telemetry import ServiceMetrics
from driftline.training.core import CoreConfig, TrainingCore
from driftline.training.kafka_loop import KafkaRetrainLoop, KafkaTrainingLoop
from driftline.training.registry_sink import RegistrySink
from driftline.training.replay import KafkaReplay
from driftline.training.training_metrics import TrainingCollector

log = logging.getLogger(__name__)


def core_config(cfg: TrainingSettings) -> CoreConfig:
    """The core's knobs from the service settings."""
    return CoreConfig(
        snapshot_every=cfg.snapshot_every,
        allowed_lateness_s=cfg.allowed_lateness_s,
        orphan_retention_s=cfg.orphan_retention_s,
        expired_capacity=cfg.expired_capacity,
        eval_window=cfg.eval_window,
        actor=cfg.actor,
        retrain_max_wait_s=cfg.retrain_max_wait_s,
        retrain_min_fraction=cfg.retrain_min_fraction,
    )


async def wait_for_registry(client: RegistryClient, wait_s: float) -> None:
    """Return once the registry answers; :class:`UnavailableError` after ``wait_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            await client.list_models()
            return
        except DriftlineError as exc:
            if not exc.retriable:
                raise
            if loop.time() >= deadline:
                raise UnavailableError(
                    f"the registry at {client.target} did not answer within {wait_s:.0f}s "
                    f"({exc.message}). Start it (`driftline run registry`) or set "
                    "DRIFTLINE_TRAINING__REGISTRY_TARGET."
                ) from exc
        await asyncio.sleep(0.5)


async def serve(settings: PlatformSettings, stop: asyncio.Event) -> None:
    """Run training until ``stop`` is set."""
    cfg = settings.training
    specs = load_model_specs(cfg.models_dir)
    if not specs:
        raise SpecError(f"{cfg.models_dir}: no model spec (*.yaml) to train")
    metrics = ServiceMetrics("training")
    health = Health("training")
    health.set("kafka", False)
    health.set("registry", False)
    await wait_for_kafka(settings.kafka)
    await provision_topics(settings.kafka)
    health.set("kafka", True)
    client = RegistryClient(cfg.registry_target, token=cfg.registry_token)
    try:
        await wait_for_registry(client, cfg.registry_wait_s)
        health.set("registry", True)
        sink = RegistrySink(client, settings.registry.signing_key)
        cores = [TrainingCore(spec, sink, core_config(cfg)) for spec in specs.values()]
        metrics.registry.register(TrainingCollector(cores))
        app = build_admin_app(health, metrics, title="Driftline training")
        online = KafkaTrainingLoop(cores, settings, metrics)
        retrain = KafkaRetrainLoop(cores, settings, metrics, KafkaReplay(settings.kafka))
        log.info("training ready: model(s) %s, admin on %s:%d",
                 ", ".join(specs), cfg.admin.host, cfg.admin.port)  # fmt: skip
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_http(app, cfg.admin.host, cfg.admin.port, stop))
            tg.create_task(online.run(stop))
            tg.create_task(retrain.run(stop))
    finally:
        await client.close()
