"""The features service's metrics, on top of the ones every service has."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from driftline.telemetry import ServiceMetrics
from driftline.telemetry.metrics import LATENCY_BUCKETS

__all__ = ["FeaturesMetrics"]


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
