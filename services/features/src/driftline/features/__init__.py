"""Driftline's feature store service.

Streaming per-entity window aggregates (:mod:`~driftline.features.aggregates`)
kept in a changelog-backed state table (:mod:`~driftline.features.state_table`,
driven by the consumer-group worker in :mod:`~driftline.features.worker`), which
writes the online store ``features.online_store`` chooses (the contract and the
stores are in :mod:`driftline.online_store`), the point-in-time
feature log on ``driftline.features`` and gRPC ``FeatureStore``
(:mod:`~driftline.features.grpc_server`).  Run it with ``python -m driftline.features``.
"""

from driftline.features.aggregates import EntityState, WindowAggregate
from driftline.features.lookup import LookupResult, OnlineFeatureLookup
from driftline.features.processor import BatchOutcome, FeatureProcessor, SourceRecord

__all__ = [
    "BatchOutcome",
    "EntityState",
    "FeatureProcessor",
    "LookupResult",
    "OnlineFeatureLookup",
    "SourceRecord",
    "WindowAggregate",
]
