"""The registry's own Prometheus series, on the service's registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from driftline.contracts.messages import RegistryEvent, RegistryEventKind, utcnow
from driftline.registry.state import DELETED_VERSION, ApplyOutcome, RegistryState
from driftline.telemetry import ServiceMetrics

__all__ = ["ChampionAgeCollector", "RegistryMetrics", "UnservedRetrainsCollector"]

CHAMPION = "champion"


class ChampionAgeCollector(Collector):
    """``driftline_registry_champion_age_seconds{model}``, computed when scraped.

    The age is the time since the ``champion`` alias last moved (set or rolled
    back) to the version it points at now, by the event's own time on the log,
    so every replica reports the same age.  A model without a champion has no
    series (the ``ChampionTooOld`` alert must not fire for it).

    :attr:`state` is called at each scrape, so it sees the state the log built by
    then; until it is set the family is exposed without samples.
    """

    def __init__(
        self,
        state: Callable[[], RegistryState] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.state = state
        self.clock = clock

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        if self.state is None:
            yield family
            return
        now = self.clock()
        for name, model in sorted(self.state().models.items()):
            if CHAMPION not in model.aliases:
                continue
            since = next(
                (c.changed_at for c in reversed(model.history) if c.alias == CHAMPION), None
            )
            if since is not None:
                family.add_metric([name], max(0.0, (now - since).total_seconds()))
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "driftline_registry_champion_age_seconds",
            "Seconds since the champion alias of a model was last set (by the log's event time)",
            labels=["model"],
        )


class UnservedRetrainsCollector(Collector):
    """``driftline_registry_unserved_retrains{model}``, read from the state when scraped.

    One series per registered model, 0 when every retrain request was served (so an
    alert sees a model whose count rises from 0, and the series exists before the
    first request): the retrain requests recorded since the model's latest version
    because Driftline cannot retrain it (``RecordUnservedRetrain``).
    """

    def __init__(self, state: Callable[[], RegistryState] | None = None) -> None:
        self.state = state

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        if self.state is not None:
            for name, model in sorted(self.state().models.items()):
                family.add_metric([name], float(len(model.unserved)))
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "driftline_registry_unserved_retrains",
            "Retrain requests of a model that Driftline could not serve (no trainer for its "
            "framework), since its latest version",
            labels=["model"],
        )


class RegistryMetrics:
    """Versions, alias changes and log events; RPC latency uses ``request_latency``."""

    def __init__(self, base: ServiceMetrics) -> None:
        self.base = base
        self.versions = Gauge(
            "driftline_registry_versions",
            "Model versions registered (all models)",
            registry=base.registry,
        )
        self.models = Gauge(
            "driftline_registry_models", "Models registered", registry=base.registry
        )
        self.alias_changes = Counter(
            "driftline_registry_alias_changes",
            "Alias moves applied, by alias and kind (set, rolled_back, deleted)",
            ["alias", "kind"],
            registry=base.registry,
        )
        self.events = Counter(
            "driftline_registry_events",
            "driftline.models events read, by outcome (applied, ignored, invalid)",
            ["outcome"],
            registry=base.registry,
        )
        self.champion_age = ChampionAgeCollector()
        base.registry.register(self.champion_age)
        self.unserved_retrains = UnservedRetrainsCollector()
        base.registry.register(self.unserved_retrains)

    def track_champions(
        self, state: Callable[[], RegistryState], clock: Callable[[], datetime] = utcnow
    ) -> None:
        """Expose each model's champion age and unserved retrain requests, read from
        ``state()`` at scrape time."""
        self.champion_age.state = state
        self.champion_age.clock = clock
        self.unserved_retrains.state = state

    def observe(self, event: RegistryEvent, outcome: ApplyOutcome, state: RegistryState) -> None:
        """Account for one event read from the log."""
        self.events.labels(outcome="applied" if outcome.applied else "ignored").inc()
        if not outcome.applied:
            return
        if event.kind in (RegistryEventKind.ALIAS_SET, RegistryEventKind.ROLLED_BACK):
            if event.version == DELETED_VERSION:
                kind = "deleted"
            elif event.kind is RegistryEventKind.ROLLED_BACK:
                kind = "rolled_back"
            else:
                kind = "set"
            self.alias_changes.labels(alias=event.alias or "", kind=kind).inc()
        self.versions.set(state.version_count)
        self.models.set(len(state.models))
