"""A dict-backed online store with the same semantics as Redis, for tests and examples.

>>> import asyncio
>>> from driftline.specs import FeatureSetSpec
>>> spec = FeatureSetSpec(name="a", version=1, entity="e", ttl=60, fields={"x": {"type": "int"}})
>>> store = InMemoryOnlineStore()
>>> asyncio.run(store.write("a", [EntityWrite("e1", {"x": (7, 1_000_000)})]))
>>> rows = asyncio.run(store.read(spec, ["e1", "e2"], ["x"], now=30.0))
>>> [[r.status.value for r in row] for row in rows]
[['present'], ['missing']]
"""

from __future__ import annotations

from collections.abc import Sequence

from driftline.online_store.base import (
    MISSING,
    EntityWrite,
    FeatureRead,
    GenerationMarker,
    OnlineStore,
    TimedValue,
    classify,
)
from driftline.specs import FeatureSetSpec

__all__ = ["InMemoryGenerationMarker", "InMemoryOnlineStore"]


class InMemoryGenerationMarker(GenerationMarker):
    """The marker in a variable; :meth:`wipe` forgets it."""

    def __init__(self) -> None:
        self.token: str | None = None

    async def read(self) -> str | None:
        return self.token

    async def claim(self, token: str) -> str:
        if self.token is None:
            self.token = token
        return self.token

    def wipe(self) -> None:
        """Forget the token, as a FLUSHALL would."""
        self.token = None


class InMemoryOnlineStore(OnlineStore):
    """Values in a dict keyed by (feature set, entity); declares a generation marker."""

    where = "the in-memory online store"

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], dict[str, TimedValue]] = {}
        self._marker = InMemoryGenerationMarker()
        self.generation_marker = self._marker

    def wipe(self) -> None:
        """Forget every value and the generation marker, as a FLUSHALL would."""
        self._data.clear()
        self._marker.wipe()

    async def write(self, featureset: str, writes: Sequence[EntityWrite]) -> None:
        for w in writes:
            row = self._data.setdefault((featureset, w.entity_id), {})
            for name, (value, t_us) in w.values.items():
                current = row.get(name)
                if current is None or current[1] <= t_us:
                    row[name] = (value, t_us)

    async def read(
        self,
        featureset: FeatureSetSpec,
        entity_ids: Sequence[str],
        names: Sequence[str],
        now: float,
    ) -> list[list[FeatureRead]]:
        out = []
        for entity_id in entity_ids:
            row = self._data.get((featureset.name, entity_id), {})
            reads = []
            for name in names:
                stored = row.get(name)
                if stored is None:
                    reads.append(MISSING)
                else:
                    reads.append(classify(stored[0], stored[1], featureset.ttl, now))
            out.append(reads)
        return out
