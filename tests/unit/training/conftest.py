"""Fixtures: feature vectors and labels for training tests (no sockets)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from driftline.contracts.messages import FeatureVector, LabelValue, ValidLabel

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def vector(
    i: int, values: dict[str, Any] | None = None, featureset: str = "loans"
) -> FeatureVector:
    """The vector of event ``e<i>`` at ``T0 + i`` seconds."""
    at = T0 + timedelta(seconds=i)
    return FeatureVector(
        event_id=f"e{i}",
        entity_id=f"c{i % 7}",
        event_time=at,
        featureset=featureset,
        featureset_version=1,
        values=values if values is not None else {"x": float(i)},
        produced_at=at,
    )


def label(i: int, y: LabelValue = 1) -> ValidLabel:
    """The label of event ``e<i>``."""
    at = T0 + timedelta(seconds=i)
    return ValidLabel(
        event_id=f"e{i}", entity_id=f"c{i % 7}", event_time=at, label=y, ingested_at=at
    )


@pytest.fixture
def make_vector() -> Callable[..., FeatureVector]:
    """:func:`vector`."""
    return vector


@pytest.fixture
def make_label() -> Callable[..., ValidLabel]:
    """:func:`label`."""
    return label
