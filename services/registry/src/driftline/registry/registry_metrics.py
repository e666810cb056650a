"""The registry's own Prometheus series, on the service's registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from driftline.contracts.messages import RegistryEvent, RegistryEventKind
from driftline.registry.state import DELETED_VERSION, ApplyOutcome, RegistryState
from driftline.telemetry import ServiceMetrics

__all__ = ["RegistryMetrics"]


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
