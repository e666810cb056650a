"""Promotions serving cannot follow: the champion keeps serving, the follower goes on.

A ``driftline.models`` record that does not parse, or moves an alias to a version
that cannot be served (none such, an artifact that fails verification or does not
unpickle), is skipped and counted; a promotion that fails because the registry is
unreachable is tried again until it loads, and the wait shows as a stall.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from driftline.contracts.errors import NotFoundError, UnavailableError
from driftline.contracts.messages import RegistryEvent, RegistryEventKind
from driftline.contracts.topics import MODELS
from driftline.serving.kafka_loop import ModelFollower
from driftline.serving.loaded_model import LoadedModel
from driftline.serving.memory_sources import InMemoryModelSource
from driftline.serving.model_table import ModelTable
from driftline.serving.serving_metrics import ServingMetrics
from driftline.telemetry import ConsumerHealth, ServiceMetrics

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NAME = "loans-risk"


def _event(
    kind: RegistryEventKind, version: int, alias: str | None = "champion", name: str = NAME
) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"{kind.value}-{name}-{alias}-{version}", kind=kind, model_name=name,
        version=version, alias=alias, actor="test", at=T0,
    )  # fmt: skip


def _alias_set(version: int, alias: str = "champion", name: str = NAME) -> RegistryEvent:
    return _event(RegistryEventKind.ALIAS_SET, version, alias, name)


class FlakySource(InMemoryModelSource):
    """Loads fail with :attr:`error` while it is set (a registry outage, an unpicklable
    artifact …); each attempt notes the stalled partitions :attr:`health` reports."""

    def __init__(self) -> None:
        super().__init__()
        self.error: Exception | None = None
        self.failures_left = 0
        self.health: ConsumerHealth | None = None
        self.stalls_seen: list[list[tuple[str, int, int]]] = []

    async def load(
        self, name: str, *, alias: str | None = None, version: int | None = None
    ) -> LoadedModel:
        if self.health is not None:
            self.stalls_seen.append(self.health.stalled())
        if self.error is not None and self.failures_left != 0:
            self.failures_left -= 1
            raise self.error
        return await super().load(name, alias=alias, version=version)


@pytest.fixture
def source(
    make_model: Callable[..., LoadedModel], tree_pipeline: Any, other_pipeline: Any
) -> FlakySource:
    """v1 (champion) and v2 of the model."""
    source = FlakySource()
    source.add(make_model(tree_pipeline, 1), "champion")
    source.add(make_model(other_pipeline, 2))
    return source


@pytest.fixture
async def table(source: FlakySource) -> ModelTable:
    """Serving v1 as champion."""
    table = ModelTable(source)
    await table.sync()
    return table


async def test_a_promotion_to_no_such_version_leaves_the_champion_serving(
    table: ModelTable,
) -> None:
    for bad in (_alias_set(99), _event(RegistryEventKind.ROLLED_BACK, 0), _alias_set(-3)):
        with pytest.raises(NotFoundError):
            await table.apply(bad)
        assert table.alias(NAME, "champion").version == 1
    assert table.get("").name == NAME  # still the only model


async def test_events_of_a_model_the_registry_does_not_have_add_no_name(
    table: ModelTable,
) -> None:
    with pytest.raises(NotFoundError):
        await table.apply(_alias_set(1, name="ghost"))
    await table.apply(_event(RegistryEventKind.REGISTERED, 1, None, "ghost"))
    for _ in range(5):
        await asyncio.sleep(0)  # the prefetch fails in the background
    assert table.names == [NAME]
    # A request naming no model still reaches the only one served.
    assert table.alias("", "champion").version == 1


async def test_a_deleted_alias_stops_being_served(table: ModelTable) -> None:
    assert await table.apply(_alias_set(2, "challenger"))
    assert table.loaded_aliases() == {NAME: {"champion": 1, "challenger": 2}}
    assert await table.apply(_alias_set(0, "challenger"))  # the registry's DeleteAlias
    assert table.loaded_aliases() == {NAME: {"champion": 1}}


def _follower(table: ModelTable, metrics: ServingMetrics) -> tuple[ModelFollower, ConsumerHealth]:
    # stall_after_s=0: the first failed attempt already counts as a stall.
    health = ConsumerHealth(metrics.base.registry, stall_after_s=0)
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")  # never started here
    return ModelFollower(consumer, table, metrics, health, retry_s=0.01), health


async def test_the_follower_skips_what_it_cannot_follow_and_applies_the_next(
    table: ModelTable, source: FlakySource
) -> None:
    metrics = ServingMetrics(ServiceMetrics("serving"))
    follower, health = _follower(table, metrics)
    stop = asyncio.Event()
    records: list[bytes | None] = [
        b"\xff\xfe not json",
        None,
        b'{"kind": "alias_set"}',
        _alias_set(7).model_dump_json().encode(),
        _alias_set(2, name="ghost").model_dump_json().encode(),
    ]
    for offset, value in enumerate(records):
        await follower.follow_record(0, offset, value, stop)
    # An artifact that verifies but does not unpickle raises something unexpected.
    source.error, source.failures_left = TypeError("cannot unpickle Pipeline"), 1
    await follower.follow_record(0, 5, _alias_set(2).model_dump_json().encode(), stop)
    assert table.alias(NAME, "champion").version == 1

    assert {
        reason: health.skipped(MODELS.name, reason)
        for reason in ("unreadable", "unknown_version", "unknown_model", "processing_error")
    } == {"unreadable": 3, "unknown_version": 1, "unknown_model": 1, "processing_error": 1}
    # The same promotion, now loadable, is followed.
    await follower.follow_record(0, 6, _alias_set(2).model_dump_json().encode(), stop)
    assert table.alias(NAME, "champion").version == 2
    text = metrics.base.render().decode()
    assert 'driftline_serving_registry_events_total{outcome="invalid"} 6.0' in text
    assert 'driftline_serving_registry_events_total{outcome="applied"} 1.0' in text


async def test_a_promotion_waits_out_a_registry_outage_and_the_wait_is_a_stall(
    table: ModelTable, source: FlakySource
) -> None:
    metrics = ServingMetrics(ServiceMetrics("serving"))
    follower, health = _follower(table, metrics)
    source.health = health
    source.error, source.failures_left = UnavailableError("registry down"), 3
    await follower.follow_record(0, 41, _alias_set(2).model_dump_json().encode(), asyncio.Event())

    assert table.alias(NAME, "champion").version == 2  # applied once the registry answered
    # Four attempts; from the second on, the partition is reported stalled at the offset.
    assert source.stalls_seen == [[]] + [[(MODELS.name, 0, 41)]] * 3
    assert health.stalled() == []  # it moved on
    assert health.skipped(MODELS.name, "processing_error") == 0


async def test_stop_ends_the_wait_for_the_registry(table: ModelTable, source: FlakySource) -> None:
    metrics = ServingMetrics(ServiceMetrics("serving"))
    follower, _ = _follower(table, metrics)
    source.error, source.failures_left = UnavailableError("registry down"), -1  # for good
    stop = asyncio.Event()
    waiting = asyncio.create_task(
        follower.follow_record(0, 1, _alias_set(2).model_dump_json().encode(), stop)
    )
    await asyncio.sleep(0.05)
    assert not waiting.done()
    stop.set()
    await asyncio.wait_for(waiting, 5)
    assert table.alias(NAME, "champion").version == 1
