"""Canary routing: about the configured share of entities, always the same ones."""

from __future__ import annotations

import pytest

from driftline.serving.canary import bucket_of, in_canary

pytestmark = pytest.mark.unit

ENTITIES = [f"customer-{i}" for i in range(10_000)]


@pytest.mark.parametrize("percent", [5.0, 20.0, 50.0])
def test_share_of_entities_is_close_to_the_percentage(percent: float) -> None:
    share = sum(in_canary(e, percent) for e in ENTITIES) / len(ENTITIES) * 100
    # Binomial sd at 10,000 draws is <= 0.5 points; 1.5 points is 3 sd.
    assert abs(share - percent) < 1.5


def test_same_entities_every_time() -> None:
    first = {e for e in ENTITIES if in_canary(e, 20.0)}
    second = {e for e in ENTITIES if in_canary(e, 20.0)}
    assert first == second


def test_bucket_is_the_same_in_every_process() -> None:
    # A fixed value: Python's own hash() is salted per process, BLAKE2b is not.
    assert f"{bucket_of('customer-42'):.6f}" == "20.265169"


def test_raising_the_share_only_adds_entities() -> None:
    at10 = {e for e in ENTITIES if in_canary(e, 10.0)}
    at20 = {e for e in ENTITIES if in_canary(e, 20.0)}
    assert at10 < at20


def test_zero_and_hundred_are_exact() -> None:
    assert not any(in_canary(e, 0.0) for e in ENTITIES)
    assert all(in_canary(e, 100.0) for e in ENTITIES)
