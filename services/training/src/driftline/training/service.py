"""Wiring: settings → cores, Kafka loops, registry, admin endpoints."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import fields
from pathlib import Path

from driftline.contracts.errors import DriftlineError, UnavailableError
from driftline.kafkaio import provision_topics, wait_for_kafka
from driftline.registry_client import RegistryClient
from driftline.runtime import Health, build_admin_app, serve_admin
from driftline.security.kafka_auth import kafka_auth
from driftline.settings import PlatformSettings, TrainingSettings
from driftline.specs import (
    FeatureSetCatalog,
    LabelSpec,
    ModelSpec,
    SpecError,
    load_featuresets,
    load_model_specs,
)
from driftline.telemetry import ConsumerHealth, ServiceMetrics
from driftline.training.core import CoreConfig, TrainingCore
from driftline.training.kafka_loop import KafkaRetrainLoop, KafkaTrainingLoop
from driftline.training.recurring import RecurringConfig
from driftline.training.registry_sink import RegistrySink
from driftline.training.replay import KafkaReplay
from driftline.training.training_metrics import TrainingCollector

log = logging.getLogger(__name__)


def core_config(cfg: TrainingSettings) -> CoreConfig:
    """The core's knobs from the service settings: each one the settings declare under
    the same name (one they do not, such as ``reference_bins``, keeps its default)."""
    declared = TrainingSettings.model_fields
    knobs = {f.name: getattr(cfg, f.name) for f in fields(CoreConfig) if f.name in declared}
    knobs["recurring"] = RecurringConfig(**cfg.recurring.model_dump())
    return CoreConfig(**knobs)


def featureset_catalog(featuresets_dir: Path) -> FeatureSetCatalog | None:
    """The feature sets training checks models against (None without the directory)."""
    if featuresets_dir.is_dir():
        return load_featuresets(featuresets_dir)
    log.warning("feature-set directory %s not found (training.featuresets_dir): labels are "
                "checked against their model's task only", featuresets_dir)  # fmt: skip
    return None


def unservable_reasons(specs: dict[str, ModelSpec]) -> dict[str, str]:
    """Per model whose spec training cannot train (no pipeline), why: a retrain request
    for it is recorded on the model in the registry instead of being served."""
    return {
        name: (
            f"model {name} is a {spec.framework} model without a trainer (its spec has no "
            "pipeline): Driftline serves and watches it but cannot retrain it; register a "
            "version trained elsewhere (`driftline models register`)"
        )
        for name, spec in specs.items()
        if not spec.retrainable
    }


def label_specs(specs: dict[str, ModelSpec], featuresets_dir: Path) -> dict[str, LabelSpec | None]:
    """Per model, the label type its feature set declares (None: the task's default).

    Each model is checked against its feature set (:meth:`ModelSpec.check_featureset`):
    a mismatch (another label task, a missing feature) raises :class:`SpecError`.  A
    model whose feature set is not in ``featuresets_dir`` (or a missing directory) is
    trained with the default check for its task, with a warning.
    """
    catalog = featureset_catalog(featuresets_dir)
    out: dict[str, LabelSpec | None] = {}
    for name, spec in specs.items():
        featureset = catalog.get(spec.featureset) if catalog is not None else None
        if featureset is None:
            if catalog is not None:
                log.warning("model %s: feature set %s is not declared in %s; its labels are "
                            "checked as %s labels", name, spec.featureset, featuresets_dir,
                            spec.task)  # fmt: skip
            out[name] = None
            continue
        spec.check_featureset(featureset)
        out[name] = featureset.label
    return out


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
    labels = label_specs(specs, cfg.featuresets_dir)
    catalog = featureset_catalog(cfg.featuresets_dir)
    unservable = unservable_reasons(specs)
    trained = {name: spec for name, spec in specs.items() if name not in unservable}
    if not trained:
        raise SpecError(
            f"{cfg.models_dir}: no model spec training can train (each has no pipeline: "
            f"{', '.join(specs)})"
        )
    metrics = ServiceMetrics("training")
    consumers = ConsumerHealth(metrics.registry, stall_after_s=settings.kafka.stall_after_s)
    health = Health("training")
    health.set("kafka", False)
    health.set("registry", False)
    kafka_security = kafka_auth(settings.security, "training")
    await wait_for_kafka(settings.kafka, security=kafka_security)
    await provision_topics(settings.kafka, security=kafka_security)
    health.set("kafka", True)
    client = RegistryClient(
        cfg.registry_target,
        token=cfg.registry_token,
        security=settings.security,
        identity="training",
    )
    try:
        await wait_for_registry(client, cfg.registry_wait_s)
        health.set("registry", True)
        sink = RegistrySink(client, settings.registry.signing_key)
        replay = KafkaReplay(settings.kafka, security=kafka_security)
        cores = [
            TrainingCore(
                spec,
                sink,
                core_config(cfg),
                label_spec=labels[name],
                health=consumers,
                featureset=catalog.get(spec.featureset) if catalog is not None else None,
                replay=replay,
            )
            for name, spec in trained.items()
        ]
        metrics.registry.register(TrainingCollector(cores))
        app = build_admin_app(health, metrics, title="Driftline training")
        online = KafkaTrainingLoop(cores, settings, metrics, consumers)
        retrain = KafkaRetrainLoop(
            cores, settings, metrics, replay, consumers, unserved=sink, unservable=unservable
        )
        log.info("training ready: model(s) %s%s, admin on %s:%d",
                 ", ".join(f"{n} ({s.framework})" for n, s in trained.items()),
                 f"; not retrainable here: {', '.join(unservable)}" if unservable else "",
                 cfg.admin.host, cfg.admin.port)  # fmt: skip
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_admin(app, settings, "training", stop))
            tg.create_task(online.run(stop))
            tg.create_task(retrain.run(stop))
    finally:
        await client.close()
