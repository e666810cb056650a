"""GetOnlineFeatures responses encoded by hand parse to what the protobuf runtime builds."""

from __future__ import annotations

import random

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from driftline.features.lookup import LookupResult
from driftline.features.online_store import FeatureRead, FeatureStatus
from driftline.features.wire import encode_response, varint
from driftline.specs import FeatureSetSpec
from driftline.v1 import common_pb2, feature_store_pb2

pytestmark = pytest.mark.unit

_STATUS = {
    FeatureStatus.PRESENT: common_pb2.FEATURE_STATUS_PRESENT,
    FeatureStatus.MISSING: common_pb2.FEATURE_STATUS_MISSING,
    FeatureStatus.STALE: common_pb2.FEATURE_STATUS_STALE,
}


def reference(result: LookupResult) -> feature_store_pb2.GetOnlineFeaturesResponse:
    """The response built field by field through the protobuf runtime."""
    read_at_us = round(result.read_at * 1e6)
    response = feature_store_pb2.GetOnlineFeaturesResponse(
        featureset=result.spec.name,
        featureset_version=result.spec.version,
        feature_names=result.names,
        read_at=Timestamp(seconds=read_at_us // 1_000_000, nanos=read_at_us % 1_000_000 * 1000),
    )
    for entity_id, row in zip(result.entity_ids, result.rows, strict=True):
        entity = response.entities.add(entity_id=entity_id)
        for name, r in zip(result.names, row, strict=True):
            f = entity.features.add(name=name, status=_STATUS[r.status])
            if r.event_time_us is None:
                continue
            f.event_time.seconds, micros = divmod(r.event_time_us, 1_000_000)
            f.event_time.nanos = micros * 1000
            f.age_ms = (read_at_us - r.event_time_us) // 1000
            if r.status is not FeatureStatus.PRESENT or r.value is None:
                continue
            v = r.value
            if isinstance(v, bool):
                f.value.bool_value = v
            elif isinstance(v, int):
                f.value.int64_value = v
            elif isinstance(v, float):
                f.value.double_value = v
            else:
                f.value.string_value = str(v)
    return response


SPEC = FeatureSetSpec(name="w", version=7, entity="e", fields={"x": {"type": "float"}})


def _random_read(rng: random.Random, read_at_us: int) -> FeatureRead:
    status = rng.choice([FeatureStatus.PRESENT] * 6 + [FeatureStatus.MISSING, FeatureStatus.STALE])
    if status is FeatureStatus.MISSING:
        return FeatureRead(None, None, status)
    # Times around the read (a writer's clock may run ahead: negative ages), whole
    # seconds, the epoch itself.
    t_us = rng.choice(
        [
            read_at_us - rng.randrange(0, 10**10),
            read_at_us + rng.randrange(1, 10**6),
            (read_at_us // 1_000_000) * 1_000_000,
            0,
            read_at_us - 999,
        ]
    )
    if status is FeatureStatus.STALE:
        return FeatureRead(None, t_us, status)
    value = rng.choice(
        [
            rng.uniform(-1e9, 1e9),
            0.0,
            -0.0,
            float("inf"),
            rng.randrange(-(2**63), 2**63),
            0,
            -1,
            True,
            False,
            None,
            "",
            "héllo | wörld ✓" * rng.randrange(1, 20),
        ]
    )
    return FeatureRead(value, t_us, status)


@pytest.mark.parametrize("seed", range(20))
def test_encoded_response_parses_to_the_runtime_built_message(seed: int) -> None:
    rng = random.Random(seed)
    read_at_us = 1_790_000_000_000_000 + rng.randrange(10**9)
    names = [f"f{i}_{'ü' * rng.randrange(3)}" for i in range(rng.randrange(1, 20))]
    entity_ids = [f"entity-{rng.randrange(10**6)}" for _ in range(rng.randrange(1, 40))]
    # Rows where features share event times, as the worker writes them.
    rows = []
    for _ in entity_ids:
        shared = _random_read(rng, read_at_us).event_time_us
        row = []
        for _ in names:
            r = _random_read(rng, read_at_us)
            if r.event_time_us is not None and shared is not None and rng.random() < 0.7:
                r = FeatureRead(r.value, shared, r.status)
            row.append(r)
        rows.append(row)
    result = LookupResult(SPEC, names, entity_ids, rows, read_at_us / 1e6)

    encoded = encode_response(result)
    parsed = feature_store_pb2.GetOnlineFeaturesResponse.FromString(encoded)
    assert parsed == reference(result)
    assert [e.entity_id for e in parsed.entities] == entity_ids


def test_varint_matches_the_runtime() -> None:
    for n in (0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63)):
        message = common_pb2.Value(int64_value=n)
        assert message.SerializeToString() == b"\x10" + varint(n)
