"""The FeatureStore client over a real gRPC socket: concurrent reads share calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from driftline.contracts.errors import NotFoundError
from driftline.serving.feature_source import GrpcFeatureSource
from driftline.v1 import common_pb2, feature_store_pb2, feature_store_pb2_grpc

pytestmark = pytest.mark.integration

NAMES = ["salary", "age"]


class Store(feature_store_pb2_grpc.FeatureStoreServicer):
    """Answers every entity ``e-<i>`` with salary ``i * 10.0`` and age ``i``, slowly."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def GetOnlineFeatures(self, request: Any, context: Any) -> Any:
        self.calls.append(list(request.entity_ids))
        if request.featureset != "loans":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no feature set {request.featureset}")
        await asyncio.sleep(0.05)  # a read in flight while others arrive
        response = feature_store_pb2.GetOnlineFeaturesResponse(
            featureset="loans", feature_names=request.feature_names
        )
        for e in request.entity_ids:
            i = int(e.split("-")[1])
            entity = response.entities.add(entity_id=e)
            entity.features.add(
                name="salary",
                value=common_pb2.Value(double_value=i * 10.0),
                status=common_pb2.FEATURE_STATUS_PRESENT,
                age_ms=i,
            )
            entity.features.add(
                name="age",
                value=common_pb2.Value(int64_value=i),
                status=common_pb2.FEATURE_STATUS_PRESENT,
                age_ms=i,
            )
        return response


@pytest.fixture
async def store() -> AsyncIterator[tuple[Store, GrpcFeatureSource]]:
    servicer = Store()
    server = grpc.aio.server()
    feature_store_pb2_grpc.add_FeatureStoreServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, GrpcFeatureSource(channel, f"127.0.0.1:{port}")
    finally:
        await channel.close()
        await server.stop(0)


async def test_concurrent_reads_coalesce_and_each_caller_gets_its_rows(
    store: tuple[Store, GrpcFeatureSource],
) -> None:
    servicer, source = store
    ids = [[f"e-{i}"] if i % 3 else [f"e-{i}", f"e-{i + 100}"] for i in range(30)]
    first = asyncio.create_task(source.online("loans", ids[0], NAMES, 5.0))
    await asyncio.sleep(0.02)  # the first read is in flight now
    rest = await asyncio.gather(*(source.online("loans", e, NAMES, 5.0) for e in ids[1:]))
    results = [await first, *rest]
    for asked, rows in zip(ids, results, strict=True):
        assert [(r["salary"].value, r["age"].value) for r in rows] == [
            (int(e.split("-")[1]) * 10.0, int(e.split("-")[1])) for e in asked
        ]
        assert all(r["age"].status == "PRESENT" for r in rows)
    # The first read went out alone and at once; those arriving while it was in
    # flight shared the next call.
    assert servicer.calls[0] == ids[0]
    assert len(servicer.calls) == 2
    assert sorted(e for call in servicer.calls for e in call) == sorted(e for a in ids for e in a)


async def test_a_failed_coalesced_read_fails_every_caller(
    store: tuple[Store, GrpcFeatureSource],
) -> None:
    _, source = store
    results = await asyncio.gather(
        *(source.online("nope", [f"e-{i}"], NAMES, 5.0) for i in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, NotFoundError) and "nope" in r.message for r in results)
    # The source is still usable afterwards.
    [row] = await source.online("loans", ["e-7"], NAMES, 5.0)
    assert row["salary"].value == 70.0
