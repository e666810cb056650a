"""Synthetic streams with known drift points, and the prequential error stream of a model on them.

Drift is built by switching River generators (or their concept function) at a
known position rather than with River's ``ConceptDriftStream``, whose sigmoid
overflows for large positions and widths.  An error stream is the sequence of
``1`` (the Hoeffding tree got the example wrong) / ``0`` of test-then-train
(prequential) evaluation: exactly what the live monitor sees when predictions are
joined with their labels.

Three kinds of change:

* **abrupt** (``sea``, ``agrawal``, ``stagger``): the new concept from the drift index on;
* **gradual** (``<base>-gradual-<width>``): from the drift index the probability of
  drawing an example from the new concept rises linearly from 0 to 1 over ``width``
  examples (:func:`_ramp`), so the error creeps up instead of jumping; the drift index
  is the ramp's *start*, and a detector that waits for the whole ramp is ``width`` late;
* **recurring** (``agrawal-recurring``): the new concept for
  :data:`RECURRENCE_AFTER` examples, then the old one again: a second change point
  (:attr:`StreamSpec.change_offsets`) that must be detected as a drift of its own.

>>> spec = STREAMS["stagger"]
>>> errors = prequential_errors(spec, seed=1, n_before=200, n_after=200)
>>> len(errors), set(errors) <= {0, 1}
(400, True)
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from river import datasets, tree

from driftline.drift_detectors.checks import bernoulli_errors

__all__ = [
    "GRADUAL_WIDTHS",
    "RECURRENCE_AFTER",
    "STREAMS",
    "StreamSpec",
    "bernoulli_errors",
    "prequential_errors",
]

Example = tuple[dict[Any, Any], Any]


@dataclass(frozen=True)
class StreamSpec:
    """A labelled stream whose concept changes at a known position.

    ``examples(seed, drift_at)`` yields examples forever; the concept starts to
    change at index ``drift_at`` (at once, or along a ramp of ``width`` examples).
    ``drift`` is False for stationary controls (the concept never changes), so
    every detection on them is a false alarm.
    """

    name: str
    examples: Callable[[int, int], Iterator[Example]]
    drift: bool
    description: str
    width: int = 0
    """Examples over which the new concept takes over (0: abrupt)."""
    change_offsets: tuple[int, ...] = ()
    """Further change points, as offsets from ``drift_at`` (a recurring concept's return)."""
    change_labels: tuple[str, ...] = ()
    """A name for each of ``change_offsets`` (``eval-drift`` scores it as ``<stream>/<label>``)."""

    def change_points(self, drift_at: int, length: int) -> list[int]:
        """Indices at which the concept changes in a stream of ``length`` examples whose
        drift is at ``drift_at`` (none for a control; those past the end left out)."""
        if not self.drift:
            return []
        points = [drift_at, *(drift_at + off for off in self.change_offsets)]
        return [p for p in points if p < length]


def _switch(first: Iterator[Example], second: Iterator[Example], at: int) -> Iterator[Example]:
    yield from itertools.islice(first, at)
    yield from second


def _ramp(
    first: Iterator[Example], second: Iterator[Example], at: int, width: int, seed: int
) -> Iterator[Example]:
    """``first`` until ``at``, then each example from ``second`` with a probability rising
    linearly from 0 to 1 over ``width`` examples (a mixture: River's gradual drift, without
    ``ConceptDriftStream``'s overflowing sigmoid), then ``second`` only.

    >>> xs = list(itertools.islice(_ramp(itertools.repeat(0), itertools.repeat(1), 10, 100,
    ...     seed=1), 200))
    >>> sum(xs[:10]), 20 < sum(xs[10:110]) < 80, sum(xs[110:])
    (0, True, 90)
    """
    yield from itertools.islice(first, at)
    rng = random.Random(seed)
    for i in range(width):
        yield next(second) if rng.random() < (i + 1) / width else next(first)
    yield from second


def _sea_concepts(seed: int) -> tuple[Iterator[Example], Iterator[Example]]:
    # Threshold 8 -> 9.5: about 13 % of the input space changes class.
    return (
        iter(datasets.synth.SEA(variant=0, seed=seed)),
        iter(datasets.synth.SEA(variant=3, seed=seed + 10_000)),
    )


def _agrawal_concepts(seed: int) -> tuple[Iterator[Example], Iterator[Example]]:
    return (
        iter(datasets.synth.Agrawal(classification_function=0, seed=seed)),
        iter(datasets.synth.Agrawal(classification_function=2, seed=seed + 10_000)),
    )


def _hyperplane_concepts(seed: int) -> tuple[Iterator[Example], Iterator[Example]]:
    """A static hyperplane, and the same one with its 5 drifting weights each raised by 4
    (River's own drift step, ``mag_change`` 0.005, taken 800 times, then frozen): about
    22 % of the input space changes class.  Smaller moves (12 % at +0.6) raise the tree's
    error by 2 to 4 points, less than its own swings on the static concept (it learns an
    oblique boundary with axis-parallel splits): no detector can tell them from noise."""

    def plane(mag_change: float) -> datasets.synth.Hyperplane:
        return datasets.synth.Hyperplane(
            seed=seed, n_features=10, n_drift_features=5, mag_change=mag_change, sigma=0.0,
            noise_percentage=0.05,
        )  # fmt: skip

    old, new = plane(0.0), plane(0.005)
    moved = iter(new)
    for _ in range(800):
        next(moved)
    new.mag_change = 0.0  # read on every draw: the weights stay where they are now
    return iter(old), moved


def _gradual(concepts: Callable[[int], tuple[Iterator[Example], Iterator[Example]]],
             width: int, seed: int, at: int) -> Iterator[Example]:  # fmt: skip
    first, second = concepts(seed)
    return _ramp(first, second, at, width, seed=seed + 20_000)


def _sea(seed: int, at: int) -> Iterator[Example]:
    return _switch(*_sea_concepts(seed), at)


def _agrawal(seed: int, at: int) -> Iterator[Example]:
    return _switch(*_agrawal_concepts(seed), at)


RECURRENCE_AFTER = 10_000
"""Examples of the new concept before the old one returns on ``agrawal-recurring``: the
Hoeffding tree needs about 9,000 to learn Agrawal's function 2 (its error is back under 3 %);
returning earlier, to a tree that has not yet learned the new concept, *lowers* its error
in most seeds: there is no rise to detect.  It leaves room for a detection, the policy's
cooldown (600) and the detector's warm-up on the new error level."""


def _agrawal_recurring(seed: int, at: int) -> Iterator[Example]:
    old, new = _agrawal_concepts(seed)
    yield from itertools.islice(old, at)
    yield from itertools.islice(new, RECURRENCE_AFTER)
    yield from old


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


GRADUAL_WIDTHS = (1_000, 5_000)
"""Widths of the gradual streams' ramps, in examples."""

_GRADUAL = {
    "sea": (_sea_concepts, "SEA threshold 8 -> 9.5"),
    "agrawal": (_agrawal_concepts, "Agrawal function 0 -> 2"),
    "hyperplane": (_hyperplane_concepts, "Hyperplane, 5 of 10 weights +4"),
}


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
        *(
            StreamSpec(
                f"{base}-gradual-{width}",
                functools.partial(_gradual, concepts, width),
                True,
                f"{what} (gradual: the new concept's share rises linearly over {width:,} "
                "examples from the drift index)",
                width=width,
            )
            for base, (concepts, what) in _GRADUAL.items()
            for width in GRADUAL_WIDTHS
        ),
        StreamSpec(
            "agrawal-recurring",
            _agrawal_recurring,
            True,
            f"Agrawal function 0 -> 2 -> 0 (abrupt; the old concept returns "
            f"{RECURRENCE_AFTER:,} examples after the drift)",
            change_offsets=(RECURRENCE_AFTER,),
            change_labels=("return",),
        ),
    )
}
"""The streams ``eval-drift`` runs, by name."""


def prequential_errors(spec: StreamSpec, seed: int, n_before: int, n_after: int) -> bytes:
    """The Hoeffding tree's test-then-train error stream: one byte (0 or 1) per example.

    The drift (if ``spec.drift``) sits at index ``n_before``; ``n_after`` examples follow
    the last change point (a recurring concept's stream is longer by its return's offset).
    """
    model: Any = tree.HoeffdingTreeClassifier()
    out = bytearray()
    n = n_before + max(spec.change_offsets, default=0) + n_after
    for x, y in itertools.islice(spec.examples(seed, n_before), n):
        out.append(0 if model.predict_one(x) == y else 1)
        model.learn_one(x, y)
    return bytes(out)
