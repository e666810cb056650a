"""Wiring: settings → cores, Kafka loops, registry, admin endpoints."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import fields
from pathlib import Path

from prometheus_client import Gauge

from driftline.contracts.errors import DriftlineError, UnavailableError
from driftline.contracts.topics import RETRAIN
from driftline.kafkaio import (
    Leadership,
    backoff,
    delay_before,
    first_done,
    provision_topics,
    wait_for_kafka,
    work_while_held,
)
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
from driftline.training.registry_sink import WRITER_ROLE, RegistrySink
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


class ActiveTrainer:
    """Runs the online loop only while this replica is the one active trainer.

    Each trainer is a member of ``driftline-training-retrain``; the one holding
    ``driftline.retrain``'s partition (:class:`Leadership`) claims the ``training`` writer
    role in the registry — an event on ``driftline.models`` that fences every change the
    previous holder makes from then on — and only then joins ``driftline-training`` to
    learn and register.  The others are standbys: when the active trainer dies or stops
    answering, the group hands the partition to one of them, which claims the role and
    replays from the offsets the previous one committed.  A trainer that loses the
    partition, or whose change the registry refuses as fenced, stops (:meth:`run` returns
    why) so that it restarts as a clean standby instead of learning on alongside the new
    one.
    """

    def __init__(
        self,
        leadership: Leadership,
        client: RegistryClient,
        sink: RegistrySink,
        online: KafkaTrainingLoop,
        metrics: ServiceMetrics,
        instance_id: str,
    ) -> None:
        self.leadership = leadership
        self.client = client
        self.sink = sink
        self.online = online
        self.instance_id = instance_id
        self.active = Gauge(
            "driftline_training_active",
            "1 while this trainer is the active one (holds the training writer role), "
            "0 while it is a standby",
            registry=metrics.registry,
        )
        self.epoch = Gauge(
            "driftline_training_writer_epoch",
            "The epoch of the training writer role this trainer claimed (0: none yet)",
            registry=metrics.registry,
        )

    async def _claim(self, stop: asyncio.Event) -> bool:
        wait, failures = backoff(first_s=0.5, max_s=5.0), 0
        while not stop.is_set():
            try:
                claim = await self.client.claim_writer(WRITER_ROLE, self.instance_id)
            except UnavailableError as exc:
                log.warning("claiming the training writer role failed (%s); retrying", exc)
                failures += 1
                await first_done(asyncio.sleep(delay_before(wait, failures)), stop.wait())
                continue
            self.sink.writer = claim.lease
            self.leadership.epoch = claim.epoch
            self.epoch.set(claim.epoch)
            since = f" (from {claim.previous_holder})" if claim.previous_holder else ""
            log.info("active trainer: claimed the %s writer role, epoch %d%s",
                     WRITER_ROLE, claim.epoch, since)  # fmt: skip
            return True
        return False

    async def run(self, stop: asyncio.Event) -> str | None:
        """Wait to become active, train while active; ``None`` on ``stop``, else why this
        trainer stopped being the active one."""
        log.info("standby: waiting to hold driftline.retrain (the active trainer's partition)")
        ended = await work_while_held(
            self.leadership, stop, self.online.run, deposed=self.sink.deposed,
            active=self.active.set, claim=lambda: self._claim(stop),
        )  # fmt: skip
        if ended == "deposed":
            return "the registry refused its change: another trainer claimed the writer role"
        if ended == "lost":
            return (
                "the group moved driftline.retrain to another trainer (this one stopped answering)"
            )
        return None


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
        sink = RegistrySink(
            client, settings.registry.signing_key, fenced=True, instance_id=cfg.instance_id
        )
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
        leadership = Leadership(RETRAIN.name)
        retrain = KafkaRetrainLoop(
            cores, settings, metrics, replay, consumers, unserved=sink, unservable=unservable,
            leadership=leadership,
        )  # fmt: skip
        active = ActiveTrainer(leadership, client, sink, online, metrics, cfg.instance_id)
        stepped_down: list[str] = []

        async def train() -> None:
            why = await active.run(stop)
            if why is not None:
                stepped_down.append(why)
                stop.set()

        log.info("training ready: model(s) %s%s, admin on %s:%d",
                 ", ".join(f"{n} ({s.framework})" for n, s in trained.items()),
                 f"; not retrainable here: {', '.join(unservable)}" if unservable else "",
                 cfg.admin.host, cfg.admin.port)  # fmt: skip
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_admin(app, settings, "training", stop))
            tg.create_task(train())
            tg.create_task(retrain.run(stop))
    finally:
        await client.close()
    if stepped_down:
        raise UnavailableError(
            f"training {cfg.instance_id} is no longer the active trainer ({stepped_down[0]}); "
            "it exits so that it restarts as a standby"
        )
