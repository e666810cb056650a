"""The features service's metrics, on top of the ones every service has."""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import Counter, Histogram

from driftline.online_store import EntityWrite
from driftline.telemetry import ServiceMetrics
from driftline.telemetry.metrics import LATENCY_BUCKETS

__all__ = ["FRESHNESS_BUCKETS", "FeaturesMetrics"]

FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Seconds; 10 s is the FeatureFreshnessBudgetBurn objective's bound (alerts.yml)."""


class FeaturesMetrics(ServiceMetrics):
    """``messages_in`` / ``messages_out`` count events in and vectors out; plus these.

    >>> m = FeaturesMetrics()
    >>> m.batch_latency.observe(0.002)
    >>> b"driftline_features_batch_latency_seconds_count 1.0" in m.render()
    True
    """

    def __init__(self) -> None:
        super().__init__("features")
        self.batch_latency = Histogram(
            "driftline_features_batch_latency_seconds",
            "Time to process a batch and make its effects durable",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "driftline_features_batch_size",
            "Events per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000),
            registry=self.registry,
        )
        self.redis_write_latency = Histogram(
            "driftline_features_redis_write_latency_seconds",
            "Time of one batch's pipelined online-store write",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "driftline_features_dead_letters",
            "Events dead-lettered by the worker, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.replayed = Counter(
            "driftline_features_replayed_skipped",
            "Redelivered events skipped because their entity state already includes them",
            registry=self.registry,
        )
        self.freshness = Histogram(
            "driftline_features_freshness_seconds",
            "Age of an entity's newest event (now minus its event time) when its online "
            "features were written, one observation per entity write",
            ["featureset"],
            buckets=FRESHNESS_BUCKETS,
            registry=self.registry,
        )

    def observe_freshness(
        self, featureset: str, writes: Sequence[EntityWrite], now_s: float | None = None
    ) -> None:
        """Record how old each written entity's online values are as they land.

        The age is taken from the newest event time among an entity's values (its
        newest event): the features a prediction reads are that old at best, whether
        the delay came from the producer, ingestion or this worker.

        >>> m = FeaturesMetrics()
        >>> m.observe_freshness("loans", [EntityWrite("e1", {"x": (1, 97_000_000)})], 100.0)
        >>> b'freshness_seconds_bucket{featureset="loans",le="5.0"} 1.0' in m.render()
        True
        """
        now_us = (time.time() if now_s is None else now_s) * 1e6
        observe = self.freshness.labels(featureset=featureset).observe
        for write in writes:
            if write.values:
                newest = max(t_us for _, t_us in write.values.values())
                observe(max(0.0, (now_us - newest) / 1e6))
