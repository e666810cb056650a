"""Window aggregates against a brute-force recomputation from the raw events."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.features.aggregates import EntityState
from driftline.specs import FeatureSetSpec

pytestmark = pytest.mark.unit

SPEC = FeatureSetSpec.model_validate(
    {
        "name": "t",
        "version": 1,
        "entity": "e",
        "fields": {"x": {"type": "float", "required": False}, "c": {"type": "string"}},
        "aggregations": [
            {"fn": "count", "window": "60s", "hop": "10s"},
            {"field": "x", "fn": "sum", "window": "60s", "hop": "10s"},
            {"field": "x", "fn": "mean", "window": "30s", "hop": "10s"},
            {"field": "x", "fn": "min", "window": "60s"},
            {"field": "x", "fn": "max", "window": "20s", "hop": "5s"},
            {"field": "c", "fn": "last", "window": "60s", "hop": "20s"},
            {"field": "x", "fn": "stddev", "window": "60s", "hop": "10s"},
        ],
    }
)


def brute_force(
    spec: FeatureSetSpec, events: list[tuple[float, dict[str, Any]]], t: float
) -> dict[str, Any]:
    """Each aggregate as of ``t`` over ``events`` (in arrival order), by definition."""
    out: dict[str, Any] = {}
    for agg in spec.aggregations:
        hop = agg.hop_s
        end = (math.floor(t / hop) + 1) * hop
        start = end - agg.window
        inside = [(et, raw) for et, raw in events if start <= et < end]
        if agg.fn == "count":
            out[agg.name] = len(inside)
            continue
        vals = [(et, raw[agg.field]) for et, raw in inside if raw.get(agg.field) is not None]
        xs = [v for _, v in vals]
        if not xs:
            out[agg.name] = None
        elif agg.fn == "sum":
            out[agg.name] = math.fsum(xs)
        elif agg.fn == "mean":
            out[agg.name] = math.fsum(xs) / len(xs)
        elif agg.fn == "min":
            out[agg.name] = min(xs)
        elif agg.fn == "max":
            out[agg.name] = max(xs)
        elif agg.fn == "last":
            newest = max(et for et, _ in vals)
            out[agg.name] = [v for et, v in vals if et == newest][-1]
        else:
            m = math.fsum(xs) / len(xs)
            out[agg.name] = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / len(xs))
    return out


def assert_close(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for name, w in want.items():
        g = got[name]
        if isinstance(w, float) and g is not None:
            assert g == pytest.approx(w, rel=1e-9, abs=1e-6), name
        else:
            assert g == w, name


def random_stream(
    rng: random.Random, n: int, lateness: float
) -> list[tuple[float, dict[str, Any]]]:
    t = 1_795_017_600.0 + rng.random() * 100
    events = []
    for _ in range(n):
        t += rng.expovariate(1 / 3.0)
        et = t - rng.random() * lateness if rng.random() < 0.3 else t
        x = None if rng.random() < 0.1 else round(rng.uniform(-1000, 1000), 3)
        events.append((et, {"x": x, "c": rng.choice("abcdef")}))
    return events


@pytest.mark.parametrize("seed", range(40))
def test_current_and_point_in_time_values_are_exact(seed: int) -> None:
    rng = random.Random(seed)
    events = random_stream(rng, 300, lateness=rng.choice([0.0, 15.0, 90.0]))
    lateness = 20.0
    state = EntityState(SPEC, allowed_lateness_s=lateness)
    seen: list[tuple[float, dict[str, Any]]] = []
    for et, raw in events:
        horizon_ok = et >= (state.max_time or et) - lateness
        vector = state.apply(et, raw)
        seen.append((et, raw))
        if horizon_ok:  # an event later than every kept window only sees what is kept
            assert_close(vector, brute_force(SPEC, seen, et))
        # A round trip through JSON (the Faust changelog) changes nothing.
        state = EntityState.from_dict(SPEC, json.loads(json.dumps(state.to_dict())), lateness)
        assert_close(state.current(), brute_force(SPEC, seen, max(e for e, _ in seen)))


def test_state_is_bounded() -> None:
    state = EntityState(SPEC, allowed_lateness_s=0.0)
    for i in range(5000):
        state.apply(1_795_017_600.0 + i, {"x": float(i), "c": "a"})
    sizes = {a.name: len(a.buckets) for a in state.aggregates}
    assert sizes == {
        "count_1m": 6,
        "x_sum_1m": 6,
        "x_mean_30s": 3,
        "x_min_1m": 1,
        "x_max_20s": 4,
        "c_last_1m": 3,
        "x_stddev_1m": 6,
    }


def test_empty_window_is_zero_count_and_none() -> None:
    assert EntityState(SPEC).current() == {
        "count_1m": 0,
        "x_sum_1m": None,
        "x_mean_30s": None,
        "x_min_1m": None,
        "x_max_20s": None,
        "c_last_1m": None,
        "x_stddev_1m": None,
    }


def test_stddev_is_population_and_zero_for_one_value() -> None:
    state = EntityState(SPEC)
    assert state.apply(100.0, {"x": 5.0, "c": "a"})["x_stddev_1m"] == 0.0
    assert state.apply(101.0, {"x": 7.0, "c": "a"})["x_stddev_1m"] == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=500, allow_nan=False),
            st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_current_values_match_brute_force_for_any_order(
    rows: list[tuple[float, float | None]],
) -> None:
    state = EntityState(SPEC)
    events = [(t, {"x": x, "c": str(i)}) for i, (t, x) in enumerate(rows)]
    for et, raw in events:
        state.apply(et, raw)
    assert_close(state.current(), brute_force(SPEC, events, max(t for t, _ in events)))
