"""Training's prequential gauge is absent until a trained model's prediction is scored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from river.datasets import synth

from driftline.contracts.messages import FeatureVector, ValidLabel
from driftline.specs import load_model_spec
from driftline.training.candidates import InMemorySink
from driftline.training.core import CoreConfig, TrainingCore
from driftline.training.label_join import Position
from driftline.training.training_metrics import TrainingCollector

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def _sample(registry: CollectorRegistry, line_start: str) -> float | None:
    """The value of the /metrics line starting with ``line_start``, None when absent."""
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_prequential_gauge_is_absent_until_a_trained_models_prediction_is_scored(
    make_vector: Callable[..., FeatureVector], make_label: Callable[..., ValidLabel]
) -> None:
    spec = load_model_spec(ROOT / "examples" / "models" / "loans.yaml")
    config = CoreConfig(snapshot_every=10**9, allowed_lateness_s=10**6)
    core = TrainingCore(spec, InMemorySink(), config)
    registry = CollectorRegistry()
    registry.register(TrainingCollector([core]))
    prequential = f'driftline_training_prequential{{metric="{spec.metric}",model="loans"}}'

    rows = list(synth.Agrawal(seed=3).take(600))
    # Every vector arrives before any label: all 300 predictions are made by a model
    # that has learned nothing; then their labels are learned.
    for i, (x, _) in enumerate(rows[:300]):
        core.on_vector(make_vector(i, values=x), Position("f", 0, i))
    for i, (_, y) in enumerate(rows[:300]):
        core.on_label(make_label(i, y=y), Position("l", 0, i))
    assert core.learner.learned == 300
    # River's metric reads 0 with nothing scored: not an accuracy of 0, so not exported.
    assert core.learner.prequential == 0.0
    assert _sample(registry, prequential) is None
    learned = 'driftline_training_examples_learned_total{model="loans"}'
    assert _sample(registry, learned) == 300.0

    # Test-then-train from here on: predictions of a model that learned 300 examples.
    for i, (x, y) in enumerate(rows[300:], start=300):
        core.on_vector(make_vector(i, values=x), Position("f", 0, i))
        core.on_label(make_label(i, y=y), Position("l", 0, i))
    assert core.learner.measured == 300
    value = _sample(registry, prequential)
    assert value is not None and 0.5 < value <= 1.0
