"""Serving reads the feature store's columns back into the values the store read, per entity."""

from __future__ import annotations

import random

import pytest

from driftline.contracts.errors import UnavailableError
from driftline.features.columns import online_features_response
from driftline.features.lookup import LookupResult
from driftline.online_store import FeatureRead, FeatureStatus
from driftline.serving.feature_source import OnlineValue
from driftline.serving.feature_transport import rows_of
from driftline.specs import FeatureSetSpec
from driftline.v1 import feature_store_pb2

pytestmark = pytest.mark.unit

SPEC = FeatureSetSpec(
    name="loans",
    version=3,
    entity="customer",
    fields={
        "salary": {"type": "float"},
        "age": {"type": "int"},
        "city": {"type": "string", "required": False},
        "owner": {"type": "bool"},
    },
    aggregations=[{"fn": "count", "window": "1h"}],
)
_VALUES = {
    "salary": [51_000.5, 0.0, -3.25],
    "age": [41, 0, 2**62],
    "city": ["Paris", "", "Zürich | ✓", None],
    "owner": [True, False],
    "count_1h": [0, 7],
}
READ_AT_US = 1_800_000_000_123_456


def _rows(rng: random.Random, names: list[str], n: int) -> list[list[FeatureRead]]:
    rows = []
    for _ in range(n):
        t_us = READ_AT_US - rng.randrange(-(10**6), 10**10)
        row = []
        for name in names:
            status = rng.choice([FeatureStatus.PRESENT] * 4 + list(FeatureStatus))
            if status is FeatureStatus.MISSING:
                row.append(FeatureRead(None, None, status))
            elif status is FeatureStatus.STALE:
                row.append(FeatureRead(None, t_us, status))
            else:
                row.append(FeatureRead(rng.choice(_VALUES[name]), t_us, status))
        rows.append(row)
    return rows


def _expected(read: FeatureRead) -> OnlineValue:
    age = 0 if read.event_time_us is None else (READ_AT_US - read.event_time_us) // 1000
    return OnlineValue(read.value, read.status.name, age)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(10))
def test_the_rows_are_what_the_store_read(seed: int) -> None:
    rng = random.Random(seed)
    names = rng.sample(SPEC.feature_names, rng.randrange(1, len(SPEC.feature_names) + 1))
    entity_ids = [f"c{rng.randrange(30)}" for _ in range(rng.choice([1, 2, 100]))]
    rows = _rows(rng, names, len(entity_ids))
    result = LookupResult(SPEC, names, entity_ids, rows, READ_AT_US / 1e6)
    wire = online_features_response(result).SerializeToString()

    got = rows_of(feature_store_pb2.GetOnlineFeaturesResponse.FromString(wire), len(entity_ids))

    assert got == [
        {name: _expected(read) for name, read in zip(names, row, strict=True)} for row in rows
    ]
    for row_got, row in zip(got, rows, strict=True):  # typed as read, not just equal
        for name, read in zip(names, row, strict=True):
            assert type(row_got[name].value) is type(read.value)


def _response(entities: int = 2) -> feature_store_pb2.GetOnlineFeaturesResponse:
    reads = [[FeatureRead(1.5, READ_AT_US, FeatureStatus.PRESENT)] for _ in range(entities)]
    ids = [f"c{i}" for i in range(entities)]
    return online_features_response(LookupResult(SPEC, ["salary"], ids, reads, READ_AT_US / 1e6))


def test_no_features_is_an_empty_row_per_entity() -> None:
    response = _response()
    del response.features[:]
    assert rows_of(response, 2) == [{}, {}]


def test_a_response_for_other_entities_is_refused() -> None:
    with pytest.raises(UnavailableError, match="answered 2 entities for 3 asked"):
        rows_of(_response(), 3, "fs:1")


@pytest.mark.parametrize("entities", [1, 2])
def test_a_column_short_of_entries_is_refused(entities: int) -> None:
    response = _response(entities)
    del response.features[0].age_ms[entities - 1 :]
    with pytest.raises(
        UnavailableError,
        match=f"'salary' with {entities} statuses, {entities - 1} ages and {entities} values",
    ):
        rows_of(response, entities)


@pytest.mark.parametrize("entities", [1, 2])
def test_a_column_of_an_unknown_type_is_refused(entities: int) -> None:
    response = _response(entities)
    response.features[0].type = feature_store_pb2.FEATURE_TYPE_UNSPECIFIED
    with pytest.raises(UnavailableError, match="'salary' of unknown type 0"):
        rows_of(response, entities)
