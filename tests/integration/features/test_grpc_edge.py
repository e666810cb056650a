"""The FeatureStore's gRPC edge over a real socket: a call whose deadline has passed when
the server takes it up is refused without reading the online store."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from driftline.features.grpc_server import start_grpc_server
from driftline.features.lookup import OnlineFeatureLookup
from driftline.features.metrics import FeaturesMetrics
from driftline.online_store import FeatureRead, InMemoryOnlineStore
from driftline.specs import FeatureSetCatalog, FeatureSetSpec
from driftline.v1 import feature_store_pb2, feature_store_pb2_grpc

pytestmark = pytest.mark.integration

SPEC = FeatureSetSpec(name="edge", version=1, entity="user", fields={"x": {"type": "float"}})


class CountingStore(InMemoryOnlineStore):
    """The in-memory store, counting the reads that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def read(self, *args: Any, **kwargs: Any) -> list[list[FeatureRead]]:
        self.reads += 1
        return await super().read(*args, **kwargs)


def _calls(metrics: FeaturesMetrics, code: str) -> int:
    value = metrics.registry.get_sample_value(
        "driftline_request_latency_seconds_count", {"method": "GetOnlineFeatures", "code": code}
    )
    return int(value or 0)


async def test_an_expired_call_is_refused_without_reading_the_store() -> None:
    store = CountingStore()
    metrics = FeaturesMetrics()
    lookup = OnlineFeatureLookup(FeatureSetCatalog([SPEC]), store)
    server, port = await start_grpc_server(lookup, metrics, "127.0.0.1", 0)
    request = feature_store_pb2.GetOnlineFeaturesRequest(featureset="edge", entity_ids=["u1"])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = feature_store_pb2_grpc.FeatureStoreStub(channel)
            await stub.GetOnlineFeatures(request, timeout=5)
            assert store.reads == 1
            # A 1 µs deadline has mostly run out by the time the server's handler starts
            # (gRPC still hands it the call): those calls must do nothing. (gRPC rounds
            # deadlines, so some are answered in time.)
            for _ in range(30):
                try:
                    await stub.GetOnlineFeatures(request, timeout=1e-6)
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # Calls with time left are still answered.
            await stub.GetOnlineFeatures(request, timeout=5)
    finally:
        await server.stop(1)  # handlers finish, and record, before the counts are read
    refused = _calls(metrics, "DEADLINE_EXCEEDED")
    handled = sum(_calls(metrics, code.name) for code in grpc.StatusCode)
    assert refused >= 1, "no expired call was refused by the server"
    # Every call the server took up read the store once, except the refused ones.
    assert store.reads == handled - refused
    assert _calls(metrics, "OK") >= 2
