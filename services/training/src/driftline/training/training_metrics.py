"""Prometheus metrics of training, read from the cores at scrape time."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from driftline.training.core import SkipReason, TrainingCore


class TrainingCollector(Collector):
    """Prequential metric, learned and skipped examples, join outcomes, candidates, retrains
    per model."""

    def __init__(self, cores: Sequence[TrainingCore]) -> None:
        self.cores = cores

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        preq = GaugeMetricFamily(
            "driftline_training_prequential",
            "Prequential (test-then-train) value of the model's metric",
            labels=["model", "metric"],
        )
        learned = CounterMetricFamily(
            "driftline_training_examples_learned", "Labeled examples learned", labels=["model"]
        )
        skipped = CounterMetricFamily(
            "driftline_training_examples_skipped",
            "Joined examples not learned, by reason (label_type: the label is not of the "
            "model's label type; model_error: the model raised predicting or learning it)",
            labels=["model", "reason"],
        )
        join = CounterMetricFamily(
            "driftline_training_join_records",
            "Feature vectors and labels through the label join, by outcome",
            labels=["model", "outcome"],
        )
        waiting = GaugeMetricFamily(
            "driftline_training_join_waiting",
            "Records held by the join: vectors waiting for a label, labels waiting for a vector",
            labels=["model", "side"],
        )
        candidates = CounterMetricFamily(
            "driftline_training_candidates",
            "Candidate versions registered, by alias given",
            labels=["model", "alias"],
        )
        retrains = CounterMetricFamily(
            "driftline_training_retrain_requests",
            "Retrain requests by outcome (skipped: rejected, too few examples after the "
            "longest wait; deferred: had to wait for labels)",
            labels=["model", "outcome"],
        )
        pending = GaugeMetricFamily(
            "driftline_training_retrain_pending",
            "Retrain requests waiting for enough labelled examples after their drift onset "
            "(scheduled snapshots are not promoted meanwhile)",
            labels=["model"],
        )
        restores = CounterMetricFamily(
            "driftline_training_restores",
            "Earlier champions restored because their concept came back (a concept-drift "
            "retrain request they answered before a fresh candidate could)",
            labels=["model"],
        )
        recurring = CounterMetricFamily(
            "driftline_training_recurring_checks",
            "Recurring-concept checks of concept-drift retrain requests, by outcome "
            "(restored; kept: no earlier champion won; none: no earlier champion to score)",
            labels=["model", "outcome"],
        )
        for core in self.cores:
            name = core.spec.name
            restores.add_metric([name], len(core.restored))
            for outcome in ("restored", "kept", "none"):
                recurring.add_metric([name, outcome], core.recurring_checks[outcome])
            if core.learner.measured:
                # Absent, not 0, until a prediction of a model that had learned something
                # is scored: River's metrics read 0 with nothing scored.
                preq.add_metric([name, core.spec.metric], core.learner.prequential)
            learned.add_metric([name], core.learner.learned)
            for reason in SkipReason:
                skipped.add_metric([name, reason.value], core.skipped[reason])
            stats = core.join.stats
            for f in fields(stats):
                join.add_metric([name, f.name], getattr(stats, f.name))
            waiting.add_metric([name, "vectors"], core.join.pending)
            waiting.add_metric([name, "labels"], core.join.orphans)
            for alias in ("champion", "challenger"):
                n = sum(1 for o in core.candidates if o.alias == alias)
                candidates.add_metric([name, alias], n)
            r = core.retrains
            for outcome, n in (
                ("handled", r.handled), ("duplicate", r.duplicates), ("skipped", r.skipped),
                ("deferred", r.deferred),
            ):  # fmt: skip
                retrains.add_metric([name, outcome], n)
            pending.add_metric([name], len(core.pending_retrains))
        yield from (preq, learned, skipped, join, waiting, candidates, retrains, pending)
        yield from (restores, recurring)
