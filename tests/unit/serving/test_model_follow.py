"""How quickly a promotion is served: registered versions load ahead, imports happen at start."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from driftline.contracts.errors import NotFoundError, UnavailableError
from driftline.contracts.messages import RegistryEvent, RegistryEventKind
from driftline.serving.loaded_model import LoadedModel
from driftline.serving.memory_sources import InMemoryModelSource
from driftline.serving.model_source import import_model_modules
from driftline.serving.model_table import ModelTable

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class GatedSource(InMemoryModelSource):
    """Loads wait for :attr:`gate`, like a download and an unpickle that take a while."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def load(
        self, name: str, *, alias: str | None = None, version: int | None = None
    ) -> LoadedModel:
        await self.gate.wait()
        return await super().load(name, alias=alias, version=version)


def _event(kind: RegistryEventKind, version: int, alias: str | None = None) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"{kind.value}-{version}", kind=kind, model_name="loans-risk", version=version,
        alias=alias, actor="training", at=T0,
    )  # fmt: skip


async def test_a_registered_version_loads_before_its_promotion_and_once(
    make_model: Callable[..., LoadedModel], tree_pipeline: Any, other_pipeline: Any
) -> None:
    source = GatedSource()
    source.gate.set()
    source.add(make_model(tree_pipeline, 1), "champion")
    table = ModelTable(source)
    await table.sync()
    assert table.alias("loans-risk", "champion").version == 1

    source.gate.clear()
    source.add(make_model(other_pipeline, 2))
    assert await table.apply(_event(RegistryEventKind.REGISTERED, 2)) is False
    assert table.alias("loans-risk", "champion").version == 1  # still serving v1
    source.gate.set()  # the download completes before the promotion is read
    for _ in range(5):
        await asyncio.sleep(0)
    assert source.loads == [("loans-risk", 1), ("loans-risk", 2)]

    # The promotion swaps the prefetched model in without loading it again.
    assert await table.apply(_event(RegistryEventKind.ALIAS_SET, 2, "champion")) is True
    assert table.alias("loans-risk", "champion").version == 2
    assert source.loads == [("loans-risk", 1), ("loans-risk", 2)]
    assert table.get("loans-risk").prefetched == {}


async def test_a_promotion_joins_the_load_already_in_flight(
    make_model: Callable[..., LoadedModel], tree_pipeline: Any
) -> None:
    source = GatedSource()
    source.add(make_model(tree_pipeline, 3))
    table = ModelTable(source)
    await table.apply(_event(RegistryEventKind.REGISTERED, 3))
    promote = asyncio.create_task(table.apply(_event(RegistryEventKind.ALIAS_SET, 3, "champion")))
    await asyncio.sleep(0)
    assert not promote.done()
    source.gate.set()
    assert await promote is True
    assert table.alias("loans-risk", "champion").version == 3
    assert source.loads == [("loans-risk", 3)]  # one download for both


async def test_a_failed_prefetch_is_loaded_again_on_promotion(
    make_model: Callable[..., LoadedModel], tree_pipeline: Any
) -> None:
    source = InMemoryModelSource()
    table = ModelTable(source)
    await table.apply(_event(RegistryEventKind.REGISTERED, 4))  # not in the source yet
    for _ in range(5):
        await asyncio.sleep(0)
    source.add(make_model(tree_pipeline, 4))
    assert await table.apply(_event(RegistryEventKind.ALIAS_SET, 4, "champion")) is True
    assert table.alias("loans-risk", "champion").version == 4


class LaggingRegistry(InMemoryModelSource):
    """A registry that answers NOT_FOUND for a version until it is added (it has not read
    it back from its log yet), and UNAVAILABLE while :attr:`down` is set; counts loads."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.attempts = 0

    async def load(
        self, name: str, *, alias: str | None = None, version: int | None = None
    ) -> LoadedModel:
        self.attempts += 1
        if self.down:
            raise UnavailableError("feature store 127.0.0.1:1 is unavailable")
        return await super().load(name, alias=alias, version=version)


async def test_a_promotion_joining_a_prefetch_the_registry_answered_not_found_still_loads(
    make_model: Callable[..., LoadedModel], tree_pipeline: Any, other_pipeline: Any
) -> None:
    # Serving reads v2's registration and promotion a few ms apart; its prefetch asks the
    # registry before the registry has read v2 back from the log (NOT_FOUND), and the
    # promotion joins that very load.  It must ask again, not drop the promotion.
    source = LaggingRegistry()
    source.add(make_model(tree_pipeline, 1), "champion")
    table = ModelTable(source)
    await table.sync()
    assert await table.apply(_event(RegistryEventKind.REGISTERED, 2)) is False
    promotion = asyncio.create_task(table.apply(_event(RegistryEventKind.ALIAS_SET, 2, "champion")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not promotion.done()  # the first answer was NOT_FOUND: asking again shortly
    source.add(make_model(other_pipeline, 2), "champion")  # the registry caught up
    assert await promotion is True
    assert table.alias("loans-risk", "champion").version == 2
    assert source.loads == [("loans-risk", 1), ("loans-risk", 2)]


async def test_a_version_that_never_appears_is_refused_after_the_retries(
    make_model: Callable[..., LoadedModel], tree_pipeline: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr("driftline.serving.model_table.NOT_FOUND_RETRIES_S", (0.0, 0.0))
    source = LaggingRegistry()
    source.add(make_model(tree_pipeline, 1), "champion")
    table = ModelTable(source)
    await table.sync()
    before = source.attempts
    with pytest.raises(NotFoundError, match="no version 9"):
        await table.apply(_event(RegistryEventKind.ALIAS_SET, 9, "champion"))
    assert source.attempts - before == 3  # the first answer and two more
    assert table.alias("loans-risk", "champion").version == 1  # what served stays


async def test_a_sync_while_the_feature_store_is_down_raises_so_it_is_tried_again(
    make_model: Callable[..., LoadedModel], tree_pipeline: Any
) -> None:
    source = LaggingRegistry()
    source.add(make_model(tree_pipeline, 3), "champion")
    source.down = True
    table = ModelTable(source)
    # Swallowing this left serving without the champion until its next promotion.
    with pytest.raises(UnavailableError, match="feature store"):
        await table.sync()
    assert not table.ready and not table.synced
    source.down = False
    await table.sync()  # the follower's retry
    assert table.ready and table.alias("loans-risk", "champion").version == 3


def test_model_libraries_are_imported_up_front() -> None:
    assert import_model_modules() == []
    assert {"river.tree", "river.forest", "river.linear_model"} <= set(sys.modules)
    assert import_model_modules(("river.no_such_package",)) == ["river.no_such_package"]
