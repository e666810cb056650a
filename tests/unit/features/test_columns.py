"""The columnar GetOnlineFeaturesResponse carries every value, status and time the lookup read."""

from __future__ import annotations

import doctest
import random

import pytest

from driftline.contracts.errors import FailedPreconditionError
from driftline.features import columns
from driftline.features.columns import VALUE_ARRAY, declared_types, online_features_response
from driftline.features.lookup import LookupResult
from driftline.online_store import FeatureRead, FeatureStatus
from driftline.specs import FeatureSetSpec
from driftline.v1 import common_pb2, feature_store_pb2

pytestmark = pytest.mark.unit

SPEC = FeatureSetSpec(
    name="w",
    version=7,
    entity="e",
    fields={
        "f": {"type": "float", "required": False},
        "i": {"type": "int", "required": False},
        "s": {"type": "string", "required": False},
        "b": {"type": "bool", "required": False},
    },
    aggregations=[
        {"fn": "count", "window": "1h"},
        {"field": "f", "fn": "mean", "window": "1h"},
        {"field": "i", "fn": "sum", "window": "1h"},
        {"field": "s", "fn": "last", "window": "1h"},
        {"field": "b", "fn": "last", "window": "1h"},
    ],
)
_STATUS = {
    FeatureStatus.PRESENT: common_pb2.FEATURE_STATUS_PRESENT,
    FeatureStatus.MISSING: common_pb2.FEATURE_STATUS_MISSING,
    FeatureStatus.STALE: common_pb2.FEATURE_STATUS_STALE,
}
_ZERO = {"fp64": 0.0, "int64": 0, "bool": False, "bytes": ""}


def _value(rng: random.Random, ftype: int) -> object:
    if ftype == feature_store_pb2.FEATURE_TYPE_DOUBLE:
        return rng.choice([rng.uniform(-1e9, 1e9), 0.0, -0.0, 1e-300, 3])  # 3: a sum of ints
    if ftype == feature_store_pb2.FEATURE_TYPE_INT64:
        return rng.choice([rng.randrange(-(2**63), 2**63), 0, -1, 2**63 - 1])
    if ftype == feature_store_pb2.FEATURE_TYPE_BOOL:
        return rng.choice([True, False])
    return rng.choice(["", "héllo | wörld ✓" * rng.randrange(1, 20)])


def _read(rng: random.Random, ftype: int, read_at_us: int, shared: int) -> FeatureRead:
    status = rng.choice([FeatureStatus.PRESENT] * 6 + [FeatureStatus.MISSING, FeatureStatus.STALE])
    if status is FeatureStatus.MISSING:
        return FeatureRead(None, None, status)
    # Times around the read (a writer's clock may run ahead: negative ages), whole
    # seconds, the epoch itself; mostly the entity's shared event time.
    t_us = rng.choice(
        [
            shared,
            shared,
            read_at_us - rng.randrange(0, 10**10),
            read_at_us + rng.randrange(1, 10**6),
            (read_at_us // 1_000_000) * 1_000_000,
            0,
            read_at_us - 999,
        ]
    )
    if status is FeatureStatus.STALE:
        return FeatureRead(None, t_us, status)
    # PRESENT but null: an optional field left out, an aggregate of an empty window.
    value = None if rng.random() < 0.15 else _value(rng, ftype)
    return FeatureRead(value, t_us, status)


@pytest.mark.parametrize("seed", range(20))
def test_every_read_value_status_and_time_is_in_its_column(seed: int) -> None:
    rng = random.Random(seed)
    read_at_us = 1_790_000_000_000_000 + rng.randrange(10**9)
    types = declared_types(SPEC)
    names = rng.sample(SPEC.feature_names, rng.randrange(1, len(SPEC.feature_names) + 1))
    # One entity (a prediction's read, built a row at a time) or many (column by column).
    count = rng.choice([1, 1, 2, rng.randrange(3, 40)])
    entity_ids = [f"entity-{rng.randrange(50)}" for _ in range(count)]
    rows = []
    for _ in entity_ids:
        shared = read_at_us - rng.randrange(10**8)
        rows.append([_read(rng, types[n], read_at_us, shared) for n in names])
    result = LookupResult(SPEC, names, entity_ids, rows, read_at_us / 1e6)

    response = online_features_response(result)
    # What a client parses is what was built.
    parsed = feature_store_pb2.GetOnlineFeaturesResponse.FromString(response.SerializeToString())
    assert parsed == response

    assert (parsed.featureset, parsed.featureset_version) == ("w", 7)
    assert parsed.read_at.ToMicroseconds() == read_at_us
    assert list(parsed.entity_ids) == entity_ids
    assert [c.name for c in parsed.features] == names
    for j, column in enumerate(parsed.features):
        assert column.type == types[column.name]
        array = VALUE_ARRAY[column.type]
        for other in set(VALUE_ARRAY.values()) - {array}:
            assert len(getattr(column, other)) == 0
        values = getattr(column, array)
        assert len(values) == len(column.status) == len(column.event_time_us) == len(entity_ids)
        assert len(column.age_ms) == len(entity_ids)
        nulls = []
        for i, row in enumerate(rows):
            read = row[j]
            assert column.status[i] == _STATUS[read.status]
            if read.event_time_us is None:
                assert (column.event_time_us[i], column.age_ms[i]) == (0, 0)
            else:
                assert column.event_time_us[i] == read.event_time_us
                assert column.age_ms[i] == (read_at_us - read.event_time_us) // 1000
            if read.status is FeatureStatus.PRESENT and read.value is None:
                nulls.append(i)
            if read.value is None:
                assert values[i] == _ZERO[array]
            else:
                assert values[i] == read.value
                assert type(values[i]) is type(_ZERO[array])
        assert list(column.nulls) == nulls


def _column(value: object, feature: str, entities: int) -> feature_store_pb2.FeatureColumn:
    """The column of ``feature`` when the last of ``entities`` entities holds ``value``."""
    fine = {"f": 1.5, "i": 1, "s": "a", "b": True}[feature]
    reads = [[FeatureRead(fine, 1_000_000, FeatureStatus.PRESENT)] for _ in range(entities - 1)]
    reads.append([FeatureRead(value, 1_000_000, FeatureStatus.PRESENT)])
    ids = [f"e{i + 1}" for i in range(entities)]
    return online_features_response(LookupResult(SPEC, [feature], ids, reads, 2.0)).features[0]


@pytest.mark.parametrize("entities", [1, 3])
def test_a_value_of_a_kindred_type_is_held_as_the_declared_type(entities: int) -> None:
    assert list(_column(3, "f", entities).fp64)[-1:] == [3.0]
    assert list(_column(4.0, "i", entities).int64)[-1:] == [4]
    assert list(_column(12, "s", entities).bytes) == ["a"] * (entities - 1) + ["12"]


@pytest.mark.parametrize("entities", [1, 3])
@pytest.mark.parametrize(
    ("value", "feature", "declared"),
    [
        ("x", "f", "FEATURE_TYPE_DOUBLE"),
        (2.5, "i", "FEATURE_TYPE_INT64"),
        (2**64, "i", "FEATURE_TYPE_INT64"),
        ("yes", "b", "FEATURE_TYPE_BOOL"),
    ],
)
def test_a_value_that_does_not_fit_its_declared_type_fails_the_read_naming_it(
    value: object, feature: str, declared: str, entities: int
) -> None:
    with pytest.raises(FailedPreconditionError) as caught:
        _column(value, feature, entities)
    message = str(caught.value)
    assert f"feature {feature!r} of w v7" in message
    assert repr(value) in message and f"'e{entities}'" in message and declared in message


def test_declared_types_follow_the_fields_and_the_aggregations() -> None:
    t = feature_store_pb2
    assert declared_types(SPEC) == {
        "f": t.FEATURE_TYPE_DOUBLE,
        "i": t.FEATURE_TYPE_INT64,
        "s": t.FEATURE_TYPE_STRING,
        "b": t.FEATURE_TYPE_BOOL,
        "count_1h": t.FEATURE_TYPE_INT64,
        "f_mean_1h": t.FEATURE_TYPE_DOUBLE,
        "i_sum_1h": t.FEATURE_TYPE_DOUBLE,
        "s_last_1h": t.FEATURE_TYPE_STRING,
        "b_last_1h": t.FEATURE_TYPE_BOOL,
    }


def test_the_module_example_runs() -> None:
    result = doctest.testmod(columns)
    assert result.attempted > 0 and result.failed == 0


def test_two_feature_sets_of_one_name_and_version_keep_their_own_columns() -> None:
    # Tests and stand-ins build sets that share a name and version with the real one.
    a = FeatureSetSpec(name="w", version=7, entity="e", fields={"x": {"type": "int"}})
    b = FeatureSetSpec(name="w", version=7, entity="e", fields={"x": {"type": "string"}})

    def column(spec: FeatureSetSpec, value: object) -> feature_store_pb2.FeatureColumn:
        read = FeatureRead(value, 1_000_000, FeatureStatus.PRESENT)
        result = LookupResult(spec, ["x"], ["e1"], [[read]], 2.0)
        return online_features_response(result).features[0]

    assert list(column(a, 5).int64) == [5]
    assert list(column(b, "five").bytes) == ["five"]
    assert list(column(a, 6).int64) == [6]


@pytest.mark.parametrize("entities", [1, 3])
def test_a_response_built_inside_a_stream_result_is_the_one_built_alone(entities: int) -> None:
    reads = [[FeatureRead(2.5, 1_000_000, FeatureStatus.PRESENT)] for _ in range(entities)]
    result = LookupResult(SPEC, ["f"], [f"e{i}" for i in range(entities)], reads, 2.0)
    out = feature_store_pb2.OnlineFeaturesResult(id=9)
    built = online_features_response(result, out.response)
    assert built is out.response
    assert out.response == online_features_response(result)
    assert out.HasField("response") and list(out.response.features[0].fp64) == [2.5] * entities
