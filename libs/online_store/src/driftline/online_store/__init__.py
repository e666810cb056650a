"""Driftline's online store contract, so that a store is a plug-in and not a service edit.

- :mod:`~driftline.online_store.base`: :class:`OnlineStore`, its error contract
  (:class:`StoreUnavailable`) and its optional capabilities (:class:`GenerationMarker`);
- :mod:`~driftline.online_store.checks`: the conformance suite every store passes;
- :mod:`~driftline.online_store.registry`: store types chosen by
  ``features.online_store.type`` (:func:`register_online_store`, the
  ``driftline.online_stores`` entry-point group, :func:`create_online_store`);
- :mod:`~driftline.online_store.memory`: a dict-backed store for tests;
- :mod:`~driftline.online_store.redis_store`: the built-in ``redis`` type (imported
  only when chosen or named, so a plug-in does not load it).
"""

from driftline.online_store import base, memory, registry
from driftline.online_store.base import *  # noqa: F403
from driftline.online_store.memory import *  # noqa: F403
from driftline.online_store.registry import *  # noqa: F403

__all__ = [*base.__all__, *memory.__all__, *registry.__all__]
