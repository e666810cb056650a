"""Choosing the online store by a typed setting: defaults, plug-ins and the errors of bad ones."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from support import sqlite_store

from driftline.features.online_rebuild import marker_for
from driftline.online_store import (
    EntityWrite,
    FeatureRead,
    InMemoryGenerationMarker,
    InMemoryOnlineStore,
    OnlineStore,
    StoreUnavailable,
    create_online_store,
    online_store_type,
    online_store_types,
    register_online_store,
    unregister_online_store,
    wait_until_reachable,
)
from driftline.online_store.redis_store import REDIS, RedisOnlineStore
from driftline.settings import ConfigError, PlatformSettings, load_settings
from driftline.specs import FeatureSetSpec

pytestmark = pytest.mark.unit


@pytest.fixture
def sqlite_type() -> Iterator[None]:
    sqlite_store.register()
    yield
    unregister_online_store("sqlite")


async def test_the_default_is_redis_from_the_redis_section_as_before() -> None:
    settings = PlatformSettings(
        redis={"host": "10.1.2.3", "port": 6390, "db": 2}, features={"online_key_ttl_s": 30}
    )
    assert settings.features.online_store.type == "redis"
    store = create_online_store(settings)  # builds clients; connects on first use
    try:
        assert isinstance(store, RedisOnlineStore)
        assert store.where == "Redis at 10.1.2.3:6390"
        assert store._reads.db == 2
        assert store._expiry_ms == b"30000"
        assert "DRIFTLINE_REDIS__HOST" in store.unreachable_hint
        assert store.generation_marker is not None
    finally:
        await store.close()


async def test_redis_parameters_in_the_section_win_over_the_old_settings() -> None:
    settings = PlatformSettings(
        features={
            "online_key_ttl_s": 30,
            "online_store": {"type": "redis", "url": "redis://cache:7000/5", "key_ttl_s": 1.5},
        }
    )
    store = create_online_store(settings)
    try:
        assert isinstance(store, RedisOnlineStore)
        assert store.where == "Redis at cache:7000" and store._reads.db == 5
        assert store._expiry_ms == b"1500"
        assert "features.online_store.url" in store.unreachable_hint
    finally:
        await store.close()


def test_the_built_in_redis_type_comes_through_the_entry_point_group() -> None:
    assert "redis" in online_store_types()
    assert online_store_type("redis") is REDIS


def test_an_unknown_type_names_the_setting_and_the_known_types() -> None:
    with pytest.raises(ConfigError) as err:
        create_online_store(PlatformSettings(features={"online_store": {"type": "cassandra"}}))
    message = str(err.value)
    assert "features.online_store.type: no online store type 'cassandra'" in message
    assert "known: redis" in message and "driftline.online_stores" in message


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"url": "http://cache:80"}, "features.online_store.url: Value error, must be a redis://"),
        ({"max_conections": 8}, "features.online_store.max_conections: Extra inputs are not"),
        ({"key_ttl_s": -1}, "features.online_store.key_ttl_s: Input should be greater than 0"),
    ],
)
def test_a_bad_store_parameter_is_named(params: dict[str, object], problem: str) -> None:
    settings = PlatformSettings(features={"online_store": {"type": "redis", **params}})
    with pytest.raises(ConfigError, match="invalid online store settings") as err:
        create_online_store(settings)
    assert problem in str(err.value)


def test_a_plug_in_parameter_is_validated_by_its_own_model(sqlite_type: None) -> None:
    with pytest.raises(ConfigError) as err:
        create_online_store(PlatformSettings(features={"online_store": {"type": "sqlite"}}))
    assert "features.online_store.path: Field required" in str(err.value)


def test_the_setting_comes_from_yaml_and_environment(
    sqlite_type: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(f"features:\n  online_store:\n    type: sqlite\n    path: {tmp_path / 'a.db'}\n")
    monkeypatch.setenv("DRIFTLINE_FEATURES__ONLINE_STORE__TIMEOUT_S", "2.5")
    section = load_settings(cfg).features.online_store
    assert section.type == "sqlite"
    assert section.model_extra == {"path": str(tmp_path / "a.db"), "timeout_s": "2.5"}
    store = create_online_store(load_settings(cfg))
    assert isinstance(store, sqlite_store.SqliteOnlineStore)


def test_a_malformed_type_fails_at_load_naming_its_line(tmp_path: Path) -> None:
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text("features:\n  online_store:\n    type: 'no spaces please'\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert f"{cfg}:3: features.online_store.type" in str(err.value)


def test_a_taken_name_is_not_silently_replaced(sqlite_type: None) -> None:
    with pytest.raises(ValueError, match="'sqlite' is already registered"):
        register_online_store("sqlite", sqlite_store.SQLITE)
    with pytest.raises(TypeError, match="must be an OnlineStoreType"):
        register_online_store("odd", object())  # type: ignore[arg-type]


class _Down(InMemoryOnlineStore):
    where = "Nowhere at 0.0.0.0:1"
    unreachable_hint = "Start it."

    async def ping(self) -> None:
        raise StoreUnavailable("the online store is unavailable: connection refused")


async def test_the_start_up_wait_names_the_store_its_failure_and_the_fix() -> None:
    with pytest.raises(StoreUnavailable) as err:
        await wait_until_reachable(_Down(), 0.05, every_s=0.01)
    assert err.value.message == (
        "Nowhere at 0.0.0.0:1 did not answer PING within 0s "
        "(the online store is unavailable: connection refused). Start it."
    )
    assert err.value.grpc_code == "UNAVAILABLE" and err.value.retriable


class _NoMarker(OnlineStore):
    """A store that declares no optional capability."""

    async def write(self, featureset: str, writes: Sequence[EntityWrite]) -> None:
        return None

    async def read(
        self,
        featureset: FeatureSetSpec,
        entity_ids: Sequence[str],
        names: Sequence[str],
        now: float,
    ) -> list[list[FeatureRead]]:
        return []


def test_the_rebuild_asks_the_store_for_its_marker_instead_of_testing_its_class() -> None:
    store = InMemoryOnlineStore()
    assert marker_for(store) is store.generation_marker
    # A store declaring none gets one in memory: rebuilt at start, wipes unnoticed.
    assert isinstance(marker_for(_NoMarker()), InMemoryGenerationMarker)


async def test_wiping_the_in_memory_store_removes_its_marker_with_its_data() -> None:
    store = InMemoryOnlineStore()
    assert store.generation_marker is not None
    await store.generation_marker.claim("t")
    store.wipe()
    assert await store.generation_marker.read() is None
