"""Exact per-entity window aggregates on event time, with bounded state.

Each aggregation keeps *buckets* of ``hop_s`` seconds of event time.  The value
of an aggregation *as of* event time ``t`` is computed over the newest window
that contains ``t``::

    end   = floor(t / hop) * hop + hop
    start = end - window             # window = n_hops * hop

so a tumbling window (``hop == window``) is the window ``t`` falls in and a
hopping window is the last ``n_hops`` buckets up to and including ``t``'s.

State is bounded: only the buckets that a window of the entity's newest event
time can contain are kept, plus ``allowed_lateness_s`` worth of older buckets
(at most ``n_hops + ceil(lateness / hop)`` per aggregation).  A late
(out-of-order) event updates its own bucket, so the current values are always
exact.  Its point-in-time value (as of its own time) is exact while it is at
most ``allowed_lateness_s`` older than the newest event; an even later event
sees only the buckets still kept, and cannot change any current value.

Null raw values are not aggregated (``count`` counts events, nulls included).

>>> from driftline.specs import AggregationSpec
>>> agg = WindowAggregate(AggregationSpec(field="x", fn="mean", window="10s", hop="5s"))
>>> for t, x in [(0.0, 1.0), (6.0, 3.0), (12.0, 5.0)]:
...     agg.add(t, x)
>>> agg.value_as_of(7.0), agg.value_as_of(12.0)
(2.0, 4.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from driftline.contracts.messages import FeatureValue
from driftline.specs import AggregationSpec, FeatureSetSpec

__all__ = ["DEFAULT_LATENESS_S", "EntityState", "WindowAggregate"]

DEFAULT_LATENESS_S = 300.0
"""How much older than an entity's newest event an event may be and still get an
exact point-in-time vector (current values are exact whatever the lateness)."""

# Bucket layouts (a list, so that a bucket serialises compactly as-is):
#   count: [n]            sum / mean: [n, sum]       min / max: [n, extreme]
#   last:  [n, value, t]  stddev: [n, welford_mean, welford_m2]
Bucket = list[Any]


class WindowAggregate:
    """One aggregation of one entity: its buckets keyed by bucket index ``floor(t / hop)``."""

    __slots__ = ("_newest", "buckets", "extra_hops", "field", "fn", "hop", "n_hops", "name")

    def __init__(self, spec: AggregationSpec, allowed_lateness_s: float = 0.0) -> None:
        self.name = spec.name
        self.fn = spec.fn
        self.field = spec.field
        self.hop = spec.hop_s
        self.n_hops = round(spec.window / self.hop)
        self.extra_hops = math.ceil(allowed_lateness_s / self.hop)
        self.buckets: dict[int, Bucket] = {}
        # Index of the newest bucket ever touched: defines what may be pruned.
        self._newest: int | None = None

    # -- updates --------------------------------------------------------------

    def add(self, t: float, value: FeatureValue) -> None:
        """Account one event at event time ``t`` (seconds) with raw ``value``.

        ``value`` is ignored for ``count``; a ``None`` value is not aggregated
        by the other functions.
        """
        fn = self.fn
        if fn != "count" and value is None:
            return
        k = math.floor(t / self.hop)
        b = self.buckets.get(k)
        if b is None:
            self.buckets[k] = _new_bucket(fn, t, value)
        elif fn == "count":
            b[0] += 1
        elif fn == "sum" or fn == "mean":
            b[0] += 1
            b[1] += value
        elif fn == "min":
            b[0] += 1
            if value < b[1]:
                b[1] = value
        elif fn == "max":
            b[0] += 1
            if value > b[1]:
                b[1] = value
        elif fn == "last":
            b[0] += 1
            if t >= b[2]:  # ties: the later arrival wins
                b[1] = value
                b[2] = t
        else:  # stddev: Welford
            n = b[0] + 1
            x = float(value)  # type: ignore[arg-type]
            d = x - b[1]
            mean = b[1] + d / n
            b[0] = n
            b[1] = mean
            b[2] += d * (x - mean)
        if self._newest is None or k > self._newest:
            self._newest = k

    def prune(self) -> None:
        """Drop buckets older than the allowed lateness before the newest window."""
        if self._newest is None:
            return
        oldest_kept = self._newest - self.n_hops - self.extra_hops + 1
        if len(self.buckets) <= self.n_hops + self.extra_hops and min(self.buckets) >= oldest_kept:
            return
        stale = [k for k in self.buckets if k < oldest_kept]
        for k in stale:
            del self.buckets[k]

    # -- reads ----------------------------------------------------------------

    def value_as_of(self, t: float) -> FeatureValue:
        """The aggregate over the newest window containing event time ``t``.

        Empty window: ``0`` for ``count``, ``None`` otherwise.
        """
        hi = math.floor(t / self.hop)
        lo = hi - self.n_hops
        fn = self.fn
        selected = [b for k, b in self.buckets.items() if lo < k <= hi]
        if fn == "count":
            count: int = sum(b[0] for b in selected)
            return count
        if not selected:
            return None
        if fn == "sum":
            total: float = _total(b[1] for b in selected)
            return total
        if fn == "mean":
            n: int = sum(b[0] for b in selected)
            return _total(b[1] for b in selected) / n
        if fn == "min":
            low: FeatureValue = min(b[1] for b in selected)
            return low
        if fn == "max":
            high: FeatureValue = max(b[1] for b in selected)
            return high
        if fn == "last":
            # Buckets do not overlap in time, so the newest bucket holds the newest value.
            newest = max(selected, key=lambda b: b[2])
            last: FeatureValue = newest[1]
            return last
        n_total, mean, m2 = 0, 0.0, 0.0
        for b in selected:  # Chan et al.'s parallel merge of Welford states
            nb, mb, m2b = b
            n = n_total + nb
            d = mb - mean
            mean += d * nb / n
            m2 += m2b + d * d * n_total * nb / n
            n_total = n
        return math.sqrt(max(m2, 0.0) / n_total)

    # -- serialisation ----------------------------------------------------------

    def to_list(self) -> list[list[Any]]:
        """Buckets as ``[[index, *bucket], …]`` (JSON-able)."""
        return [[k, *b] for k, b in self.buckets.items()]

    def load_list(self, rows: Iterable[list[Any]]) -> None:
        """Replace the buckets with those of :meth:`to_list`."""
        self.buckets = {int(r[0]): list(r[1:]) for r in rows}
        self._newest = max(self.buckets) if self.buckets else None


def _new_bucket(fn: str, t: float, value: FeatureValue) -> Bucket:
    if fn == "count":
        return [1]
    if fn == "last":
        return [1, value, t]
    if fn == "stddev":
        return [1, float(value), 0.0]  # type: ignore[arg-type]
    return [1, value]


def _total(values: Iterable[Any]) -> float:
    # math.fsum keeps a sum of many floats exact to the last bit, so that the
    # result does not depend on the order buckets happen to be stored in.
    return math.fsum(values)


class EntityState:
    """Every aggregation of one entity of one feature set, plus replay bookkeeping.

    ``offset`` is the source-partition offset of the last event applied; the
    worker skips an event whose offset is not newer (it was applied before a
    crash and is being redelivered).  ``max_time`` is the newest event time seen.
    """

    __slots__ = ("aggregates", "max_time", "offset")

    def __init__(
        self, spec: FeatureSetSpec, allowed_lateness_s: float = DEFAULT_LATENESS_S
    ) -> None:
        self.aggregates = [WindowAggregate(a, allowed_lateness_s) for a in spec.aggregations]
        self.max_time: float | None = None
        self.offset = -1

    def __bool__(self) -> bool:
        # A state is a value even when empty: ``if table.get(key)`` must not skip it.
        return True

    def apply(self, t: float, raw: Mapping[str, FeatureValue]) -> dict[str, FeatureValue]:
        """Add one event (time ``t`` in epoch seconds) and return its aggregates as of ``t``."""
        if self.max_time is None or t > self.max_time:
            self.max_time = t
        out: dict[str, FeatureValue] = {}
        for agg in self.aggregates:
            agg.add(t, raw.get(agg.field) if agg.field is not None else None)
            out[agg.name] = agg.value_as_of(t)
            agg.prune()
        return out

    def current(self) -> dict[str, FeatureValue]:
        """The aggregates as of the newest event time seen (empty windows if none)."""
        t = self.max_time if self.max_time is not None else 0.0
        return {agg.name: agg.value_as_of(t) for agg in self.aggregates}

    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-able form; :meth:`from_dict` restores it."""
        return {
            "o": self.offset,
            "t": self.max_time,
            "a": {agg.name: agg.to_list() for agg in self.aggregates},
        }

    @classmethod
    def from_dict(
        cls,
        spec: FeatureSetSpec,
        data: Mapping[str, Any],
        allowed_lateness_s: float = DEFAULT_LATENESS_S,
    ) -> EntityState:
        """Restore :meth:`to_dict` output; aggregations unknown to ``spec`` are dropped."""
        state = cls(spec, allowed_lateness_s)
        state.offset = int(data.get("o", -1))
        t = data.get("t")
        state.max_time = None if t is None else float(t)
        stored = data.get("a", {})
        for agg in state.aggregates:
            rows = stored.get(agg.name)
            if rows:
                agg.load_list(rows)
        return state
