"""The rebuild finds a wipe through the store's declared generation marker (real Redis, Kafka).

No ``isinstance``: :class:`OnlineRebuild` uses the marker the store chosen by
``features.online_store`` declares, so a ``FLUSHALL`` is noticed and the
worker's values come back.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.asyncio import Redis

from driftline.features.aggregates import EntityState
from driftline.features.online_rebuild import OnlineRebuild
from driftline.kafkaio import provision_topics
from driftline.online_store import FeatureStatus, create_online_store
from driftline.settings import KafkaSettings, PlatformSettings
from driftline.specs import FeatureSetCatalog, FeatureSetSpec

pytestmark = pytest.mark.integration

SPEC = FeatureSetSpec(
    name="rebuilt",
    version=1,
    entity="e",
    ttl=3600,
    fields={"x": {"type": "int"}},
    aggregations=[{"fn": "count", "window": "1h"}],
)


async def test_a_flushall_is_noticed_through_the_declared_marker_and_values_return(
    kafka: Any, redis_server: Any
) -> None:
    await provision_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers))
    now = time.time()
    state = EntityState(SPEC)
    state.apply(now - 5, {"x": 3})
    state.apply(now - 1, {"x": 4})
    store = create_online_store(
        PlatformSettings(redis={"host": redis_server.host, "port": redis_server.port})
    )
    admin = Redis.from_url(redis_server.url)
    rebuild = OnlineRebuild(
        store=store,
        catalog=FeatureSetCatalog([SPEC]),
        bootstrap_servers=kafka.bootstrap_servers,
        states=lambda: [("rebuilt:e1", state)],
        ready=lambda: True,
    )

    async def count() -> tuple[Any, FeatureStatus]:
        [[read]] = await store.read(SPEC, ["e1"], ["count_1h"], time.time())
        return read.value, read.status

    try:
        assert rebuild.marker is store.generation_marker
        await admin.flushdb()
        assert await rebuild.check()  # a new store: rebuilt, then the marker claimed
        assert await count() == (2, FeatureStatus.PRESENT)
        assert not await rebuild.check()  # the marker is still ours: nothing to do
        await admin.flushall()
        assert (await count())[1] is FeatureStatus.MISSING
        assert await rebuild.check()  # the marker went with the data: rebuilt
        assert await count() == (2, FeatureStatus.PRESENT)
        assert rebuild.rebuilds == 2
    finally:
        await store.close()
        await admin.aclose()
