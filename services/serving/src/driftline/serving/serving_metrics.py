"""Serving's Prometheus series, on the service's own registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from driftline.telemetry import Children, ServiceMetrics

__all__ = ["SLO_CODES", "ServingMetrics"]

SLO_CODES = ("OK", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "INVALID_ARGUMENT", "NOT_FOUND")
"""Outcomes of Predict created at 0 at start: the ones the PredictAvailabilityBudgetBurn and
ErrorRatioHigh alerts count first (a series born at its first error hides that error from
``rate()``); rarer codes are born when they happen."""


class ServingMetrics:
    """Request latency and outcomes, predictions, the prediction log and loaded versions.

    >>> m = ServingMetrics(ServiceMetrics("serving"))
    >>> m.observe("Predict", "OK", 0.001)
    >>> b'driftline_serving_requests_total{code="OK",method="Predict"} 1.0' in m.base.render()
    True
    """

    def __init__(self, base: ServiceMetrics) -> None:
        self.base = base
        registry = base.registry
        self.requests = Counter(
            "driftline_serving_requests",
            "RPCs answered, by method and gRPC status code",
            ["method", "code"],
            registry=registry,
        )
        self.predictions = Counter(
            "driftline_serving_predictions",
            "Predictions returned (rows for ModelInfer), by model and variant",
            ["model", "variant"],
            registry=registry,
        )
        self.log_dropped = Counter(
            "driftline_serving_prediction_log_dropped",
            "Prediction rows not logged to driftline.predictions, by reason "
            "(buffer_full: Kafka too slow; kafka_error: the send failed; unencodable)",
            ["reason"],
            registry=registry,
        )
        self.log_written = Counter(
            "driftline_serving_prediction_log_written",
            "Prediction rows handed to Kafka, by kind (answered / shadow); a batch record "
            "counts its rows",
            ["kind"],
            registry=registry,
        )
        self.log_buffered = Gauge(
            "driftline_serving_prediction_log_buffered",
            "Prediction rows waiting in the bounded buffer for Kafka",
            registry=registry,
        )
        self.model_loads = Counter(
            "driftline_serving_model_loads",
            "Model version loads, by outcome (loaded / failed)",
            ["outcome"],
            registry=registry,
        )
        self.model_version = Gauge(
            "driftline_serving_model_version",
            "The version loaded under each alias",
            ["model", "alias"],
            registry=registry,
        )
        self.registry_events = Counter(
            "driftline_serving_registry_events",
            "driftline.models records seen, by outcome (applied / ignored / invalid: "
            "unreadable, or naming a version that cannot be served)",
            ["outcome"],
            registry=registry,
        )

        self._latency = Children(base.request_latency)
        self._requests = Children(self.requests)
        self._predictions = Children(self.predictions)
        for code in SLO_CODES:
            self._latency("Predict", code)
            self._requests("Predict", code)

    def observe(self, method: str, code: str, seconds: float) -> None:
        """Record one RPC's latency and outcome."""
        self._latency(method, code).observe(seconds)
        self._requests(method, code).inc()

    def predicted(self, model: str, variant: str, count: int = 1) -> None:
        """Count ``count`` predictions returned by ``model`` as ``variant``."""
        self._predictions(model, variant).inc(count)

    def show_versions(self, loaded: dict[str, dict[str, int]]) -> None:
        """Publish the loaded version of every alias."""
        self.model_version.clear()
        for model, aliases in loaded.items():
            for alias, version in aliases.items():
                self.model_version.labels(model=model, alias=alias).set(version)
