"""Store types a setting chooses: ``features.online_store: {type: redis, ...}`` (Feast's shape).

A store type is an :class:`OnlineStoreType`: the pydantic model of its own
parameters (the ``online_store`` section's keys other than the common ones,
``type`` and ``startup_wait_s``) and a function that builds the store from them
and the platform settings.  The features service asks :func:`create_online_store`
for its store and never names an implementation, so a new store is a new class,
a type registered for it, and a setting:

* in-process, with :func:`register_online_store` (tests, an application that
  embeds the features service);
* from an installed package, through the ``driftline.online_stores`` entry-point
  group, looked up by name only when a setting asks for it::

      [project.entry-points."driftline.online_stores"]
      mystore = "mypackage.store:MY_STORE"   # an OnlineStoreType

The built-in ``redis`` type is registered through that same group.

>>> from pydantic import BaseModel, ConfigDict
>>> from driftline.online_store.memory import InMemoryOnlineStore
>>> class NoParams(BaseModel):
...     model_config = ConfigDict(extra="forbid")
>>> memory = OnlineStoreType(NoParams, lambda params, platform: InMemoryOnlineStore())
>>> register_online_store("doc-memory", memory)
>>> settings = PlatformSettings(features={"online_store": {"type": "doc-memory"}})
>>> type(create_online_store(settings)).__name__
'InMemoryOnlineStore'
>>> create_online_store(PlatformSettings(features={"online_store": {"type": "doc-memory", "x": 1}}))
Traceback (most recent call last):
...
driftline.settings.loader.ConfigError: invalid online store settings:
  features.online_store.x: Extra inputs are not permitted
>>> unregister_online_store("doc-memory")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from driftline.online_store.base import OnlineStore
from driftline.settings import ConfigError, PlatformSettings

__all__ = [
    "ENTRY_POINT_GROUP",
    "OnlineStoreType",
    "create_online_store",
    "online_store_type",
    "online_store_types",
    "register_online_store",
    "unregister_online_store",
]

ENTRY_POINT_GROUP = "driftline.online_stores"
"""The entry-point group installed packages register their store types in."""
_SECTION = "features.online_store"

S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class OnlineStoreType(Generic[S]):
    """A kind of online store a setting can choose.

    ``settings`` validates the store's own parameters (forbid unknown keys in it,
    so that a misspelt one is named); ``create`` builds the store from them and the
    platform settings (where a store may take defaults, as Redis takes ``redis.*``).
    """

    settings: type[S]
    create: Callable[[S, PlatformSettings], OnlineStore]


_registered: dict[str, OnlineStoreType[Any]] = {}


def register_online_store(name: str, kind: OnlineStoreType[Any], *, replace: bool = False) -> None:
    """Make ``features.online_store.type: <name>`` build stores of ``kind``.

    Registering a taken name raises :class:`ValueError` unless ``replace``: a
    plug-in must not silently take another store's place.
    """
    if not isinstance(kind, OnlineStoreType):
        raise TypeError(f"online store type {name!r} must be an OnlineStoreType, not {kind!r}")
    if name in _registered and not replace:
        raise ValueError(f"an online store type named {name!r} is already registered")
    _registered[name] = kind


def unregister_online_store(name: str) -> None:
    """Forget a type registered with :func:`register_online_store` (no error if unknown)."""
    _registered.pop(name, None)


def online_store_types() -> list[str]:
    """The names a setting may choose: registered ones and installed entry points."""
    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(installed | set(_registered))


def online_store_type(name: str) -> OnlineStoreType[Any]:
    """The store type called ``name``; :class:`ConfigError` naming the setting when none is."""
    kind = _registered.get(name)
    if kind is not None:
        return kind
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        known = ", ".join(online_store_types()) or "none"
        raise ConfigError(
            f"invalid online store settings:\n  {_SECTION}.type: no online store type "
            f"{name!r} (known: {known}); a package adds one through the "
            f"{ENTRY_POINT_GROUP!r} entry-point group"
        )
    entry = next(iter(found))
    try:
        loaded = entry.load()
    except Exception as exc:  # the plug-in's import failed: say which one and why
        raise ConfigError(
            f"invalid online store settings:\n  {_SECTION}.type: the online store type "
            f"{name!r} ({entry.value}) cannot be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(loaded, OnlineStoreType):
        raise ConfigError(
            f"invalid online store settings:\n  {_SECTION}.type: the entry point {name!r} "
            f"({entry.value}) is {type(loaded).__name__}, not an OnlineStoreType"
        )
    _registered.setdefault(name, loaded)
    return loaded


def create_online_store(platform: PlatformSettings) -> OnlineStore:
    """The store ``features.online_store`` chooses, built from its parameters.

    Raises :class:`ConfigError` naming each bad field (``features.online_store.url:
    ...``) before anything connects.
    """
    section = platform.features.online_store
    kind = online_store_type(section.type)
    try:
        params = kind.settings.model_validate(section.model_extra or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = ".".join([_SECTION, *(str(p) for p in err["loc"])])
            problems.append(f"{where}: {err['msg']}")
        raise ConfigError("invalid online store settings:\n  " + "\n  ".join(problems)) from exc
    return kind.create(params, platform)
