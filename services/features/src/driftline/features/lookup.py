"""Online feature reads: request checking and TTL, independent of any transport.

>>> import asyncio
>>> from driftline.online_store import InMemoryOnlineStore
>>> from driftline.specs import FeatureSetCatalog, FeatureSetSpec
>>> spec = FeatureSetSpec(name="a", version=1, entity="e", fields={"x": {"type": "int"}})
>>> lookup = OnlineFeatureLookup(FeatureSetCatalog([spec]), InMemoryOnlineStore())
>>> result = asyncio.run(lookup.get("", ["e1"], []))
>>> result.names, result.rows[0][0].status.value
(['x'], 'missing')
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from driftline.contracts.errors import InvalidArgumentError, NotFoundError
from driftline.online_store import FeatureRead, OnlineStore
from driftline.specs import FeatureSetCatalog, FeatureSetSpec

__all__ = ["LookupResult", "OnlineFeatureLookup"]


@dataclass(frozen=True, slots=True)
class LookupResult:
    """Rows in request order, one :class:`FeatureRead` per name, read at ``read_at`` (epoch s)."""

    spec: FeatureSetSpec
    names: list[str]
    entity_ids: list[str]
    rows: list[list[FeatureRead]]
    read_at: float


class OnlineFeatureLookup:
    """Checks a request against the catalog, then reads the online store.

    Raises :class:`NotFoundError` for an unknown feature set and
    :class:`InvalidArgumentError` for no / empty / too many entity ids or an
    unknown feature name; storage errors propagate.
    """

    def __init__(
        self,
        catalog: FeatureSetCatalog,
        store: OnlineStore,
        *,
        max_entities: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.max_entities = max_entities
        self.clock = clock
        self._names = {s.name: s.feature_names for s in catalog}
        self._known = {s.name: frozenset(s.feature_names) for s in catalog}

    def resolve(self, featureset: str) -> FeatureSetSpec:
        """The named feature set, or the only one when ``featureset`` is empty."""
        if not featureset:
            if len(self.catalog) == 1:
                only: FeatureSetSpec = next(iter(self.catalog))
                return only
            known = ", ".join(s.name for s in self.catalog) or "none"
            raise InvalidArgumentError(
                f"name a feature set: {len(self.catalog)} are served ({known})"
            )
        spec = self.catalog.get(featureset)
        if spec is None:
            known = ", ".join(s.name for s in self.catalog) or "none"
            raise NotFoundError(f"feature set {featureset!r} is not served; known: {known}")
        return spec

    async def get(
        self, featureset: str, entity_ids: Sequence[str], names: Sequence[str]
    ) -> LookupResult:
        """Read ``names`` (all of the set when empty) for ``entity_ids``."""
        spec = self.resolve(featureset)
        if not entity_ids:
            raise InvalidArgumentError("entity_ids is empty; give at least one entity id")
        if len(entity_ids) > self.max_entities:
            raise InvalidArgumentError(
                f"{len(entity_ids)} entity ids in one request; at most {self.max_entities}"
            )
        if any(not e for e in entity_ids):
            raise InvalidArgumentError("entity_ids contains an empty id")
        all_names = self._names[spec.name]
        wanted = list(names) if names else list(all_names)
        known = self._known[spec.name]
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise InvalidArgumentError(
                f"{spec.name} has no feature {', '.join(map(repr, unknown))}; "
                f"its features: {', '.join(all_names)}"
            )
        now = self.clock()
        rows = await self.store.read(spec, entity_ids, wanted, now)
        return LookupResult(spec, wanted, list(entity_ids), rows, now)
