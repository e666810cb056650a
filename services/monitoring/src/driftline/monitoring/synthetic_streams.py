"""Synthetic streams with known drift points, and the prequential error stream of a model on them.

Drift is built by switching River generators (or their concept function) at a
known position rather than with River's ``ConceptDriftStream``, whose sigmoid
overflows for large positions and widths.  An error stream is the sequence of
``1`` (the Hoeffding tree got the example wrong) / ``0`` of test-then-train
(prequential) evaluation: exactly what the live monitor sees when predictions are
joined with their labels.

>>> spec = STREAMS["stagger"]
>>> errors = prequential_errors(spec, seed=1, n_before=200, n_after=200)
>>> len(errors), set(errors) <= {0, 1}
(400, True)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from river import datasets, tree

from driftline.drift_detectors.checks import bernoulli_errors

__all__ = [
    "STREAMS",
    "StreamSpec",
    "bernoulli_errors",
    "prequential_errors",
]

Example = tuple[dict[Any, Any], Any]


@dataclass(frozen=True)
class StreamSpec:
    """A labelled stream whose concept changes at a known position.

    ``examples(seed, drift_at)`` yields examples forever; the concept switches at
    index ``drift_at``.  ``drift`` is False for stationary controls (the concept
    never changes), so every detection on them is a false alarm.
    """

    name: str
    examples: Callable[[int, int], Iterator[Example]]
    drift: bool
    description: str


def _switch(first: Iterator[Example], second: Iterator[Example], at: int) -> Iterator[Example]:
    yield from itertools.islice(first, at)
    yield from second


def _sea(seed: int, at: int) -> Iterator[Example]:
    # Threshold 8 -> 9.5: about 13 % of the input space changes class.
    return _switch(
        iter(datasets.synth.SEA(variant=0, seed=seed)),
        iter(datasets.synth.SEA(variant=3, seed=seed + 10_000)),
        at,
    )


def _agrawal(seed: int, at: int) -> Iterator[Example]:
    return _switch(
        iter(datasets.synth.Agrawal(classification_function=0, seed=seed)),
        iter(datasets.synth.Agrawal(classification_function=2, seed=seed + 10_000)),
        at,
    )


def _stagger(seed: int, at: int) -> Iterator[Example]:
    return _switch(
        iter(datasets.synth.STAGGER(classification_function=0, seed=seed)),
        iter(datasets.synth.STAGGER(classification_function=1, seed=seed + 10_000)),
        at,
    )


def _hyperplane(seed: int, at: int) -> Iterator[Example]:
    gen = datasets.synth.Hyperplane(
        seed=seed, n_features=10, n_drift_features=5, mag_change=0.0, noise_percentage=0.05
    )
    it = iter(gen)
    yield from itertools.islice(it, at)
    # The generator reads ``mag_change`` on every draw: from here the weights rotate.
    gen.mag_change = 0.005
    yield from it


def _agrawal_control(seed: int, at: int) -> Iterator[Example]:
    return iter(datasets.synth.Agrawal(classification_function=0, seed=seed))


def _sea_noisy_control(seed: int, at: int) -> Iterator[Example]:
    return iter(datasets.synth.SEA(variant=0, noise=0.1, seed=seed))


STREAMS: dict[str, StreamSpec] = {
    s.name: s
    for s in (
        StreamSpec("sea", _sea, True, "SEA threshold 8 -> 9.5 (abrupt)"),
        StreamSpec("agrawal", _agrawal, True, "Agrawal function 0 -> 2 (abrupt)"),
        StreamSpec("stagger", _stagger, True, "STAGGER function 0 -> 1 (abrupt)"),
        StreamSpec(
            "hyperplane",
            _hyperplane,
            True,
            "Hyperplane, 10 features: static, then 5 weights rotate (gradual)",
        ),
        StreamSpec("agrawal-stationary", _agrawal_control, False, "Agrawal function 0 (control)"),
        StreamSpec(
            "sea-noise-stationary",
            _sea_noisy_control,
            False,
            "SEA threshold 8 with 10 % label noise (control)",
        ),
    )
}
"""The streams ``eval-drift`` runs, by name."""


def prequential_errors(spec: StreamSpec, seed: int, n_before: int, n_after: int) -> bytes:
    """The Hoeffding tree's test-then-train error stream: one byte (0 or 1) per example.

    The drift (if ``spec.drift``) sits at index ``n_before``.
    """
    model: Any = tree.HoeffdingTreeClassifier()
    out = bytearray()
    for x, y in itertools.islice(spec.examples(seed, n_before), n_before + n_after):
        out.append(0 if model.predict_one(x) == y else 1)
        model.learn_one(x, y)
    return bytes(out)
