"""``driftline_registry_champion_age_seconds``: computed at scrape time from the alias log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from driftline.contracts.messages import RegistryEvent, RegistryEventKind
from driftline.registry.registry_metrics import RegistryMetrics
from driftline.registry.state import RegistryState
from driftline.telemetry import ServiceMetrics

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _registered(model: str, version: int) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"{model}-r{version}",
        kind=RegistryEventKind.REGISTERED,
        model_name=model,
        version=version,
        actor="a",
        at=T0,
        sha256="a" * 64,
        signature="b" * 64,
        size_bytes=1,
    )


def _alias(
    model: str, alias: str, version: int, previous: int | None, at: datetime
) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"{model}-{alias}-{version}-{at.timestamp()}",
        kind=RegistryEventKind.ALIAS_SET,
        model_name=model,
        version=version,
        alias=alias,
        previous_version=previous,
        actor="a",
        at=at,
    )


def _age(metrics: ServiceMetrics, model: str) -> float | None:
    return metrics.registry.get_sample_value(
        "driftline_registry_champion_age_seconds", {"model": model}
    )


def test_champion_age_is_time_since_the_champion_alias_last_moved() -> None:
    state = RegistryState()
    for event in (
        _registered("loans", 1),
        _registered("loans", 2),
        _registered("churn", 1),
        _alias("loans", "champion", 1, None, T0),
        _alias("churn", "challenger", 1, None, T0),  # no champion: no series
    ):
        assert state.apply(event).applied
    now = [T0 + timedelta(hours=2)]
    base = ServiceMetrics("registry")
    RegistryMetrics(base).track_champions(lambda: state, clock=lambda: now[0])

    assert _age(base, "loans") == 7200.0
    assert _age(base, "churn") is None
    # Computed when scraped: the clock moves, the age follows without any event.
    now[0] = T0 + timedelta(days=8)
    assert _age(base, "loans") == 8 * 86400.0
    # A new champion resets the age; a challenger move does not.
    assert state.apply(_alias("loans", "champion", 2, 1, T0 + timedelta(days=7))).applied
    assert state.apply(_alias("loans", "challenger", 1, None, T0 + timedelta(days=8))).applied
    assert _age(base, "loans") == 86400.0
    assert b"driftline_registry_champion_age_seconds" in base.render()


def test_the_family_is_exposed_before_a_state_is_tracked() -> None:
    base = ServiceMetrics("registry")
    RegistryMetrics(base)
    names = {family.name for family in base.registry.collect()}
    assert "driftline_registry_champion_age_seconds" in names
