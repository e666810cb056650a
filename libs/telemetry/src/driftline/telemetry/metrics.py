"""A Prometheus registry per service with the metrics every service exposes.

Series carry no ``service`` label: Prometheus's scrape target (``job``) names the
service, as the scrape config in ``infra/prometheus/`` sets it.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Children:
    """A labelled metric's children, looked up once per label values.

    ``metric.labels(...)`` costs ~3 µs a call (keyword handling and a lock);
    on a per-request path that adds up, so each child is kept here.

    >>> c = Children(Counter("hits", "Hits", ["method", "code"], registry=None))
    >>> c("Predict", "OK").inc()
    >>> c("Predict", "OK") is c("Predict", "OK")
    True
    """

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        """The child for ``values``, in the order of the metric's label names."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ServiceMetrics:
    """Metrics common to every service, on a registry of its own (no global state).

    A service adds its own metrics to :attr:`registry`.

    >>> m = ServiceMetrics("ingestion")
    >>> m.messages_in.labels(topic="driftline.events").inc()
    >>> b'driftline_messages_in_total{topic="driftline.events"} 1.0' in m.render()
    True
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.info = Gauge(
            "driftline_service_info",
            "Constant 1, labelled with the service name",
            ["service"],
            registry=self.registry,
        )
        self.info.labels(service=service).set(1)
        self.ready = Gauge(
            "driftline_ready", "1 when the service is ready to serve", registry=self.registry
        )
        self.messages_in = Counter(
            "driftline_messages_in", "Kafka records consumed", ["topic"], registry=self.registry
        )
        self.messages_out = Counter(
            "driftline_messages_out", "Kafka records produced", ["topic"], registry=self.registry
        )
        self.consumer_lag = Gauge(
            "driftline_consumer_lag",
            "Records behind the end of a partition",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.errors = Counter(
            "driftline_errors", "Errors by kind", ["kind"], registry=self.registry
        )
        self.request_latency = Histogram(
            "driftline_request_latency_seconds",
            "Request latency by method and outcome code",
            ["method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
