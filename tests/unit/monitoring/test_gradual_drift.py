"""Slow, small concept drift and a concept that comes back (issue 18), at small sizes.

The error-rise detector's slow test finds a rise spread over thousands of
examples, which its fast test (against a reference that lags the stream by a few
hundred examples and so follows the ramp) misses; the stationary controls stay
quiet; the return of Agrawal's old concept is a request of its own; and
``eval-drift`` scores each change point of a recurring stream.  The full-size
figures are ``driftline eval-drift``'s (bench/bench_drift.py), not these tests'.
"""

from __future__ import annotations

import itertools
import random

import pytest

from driftline.drift_detectors import ErrorRiseDetector, detector_params
from driftline.monitoring.eval_drift import POLICY, TARGETS, policy_hits, summarize
from driftline.monitoring.synthetic_streams import (
    GRADUAL_WIDTHS,
    RECURRENCE_AFTER,
    STREAMS,
    bernoulli_errors,
    prequential_errors,
)

pytestmark = pytest.mark.unit


def _ramp_errors(seed: int, p0: float, p1: float, at: int, width: int, n: int) -> bytes:
    """Bernoulli errors whose rate rises linearly from ``p0`` to ``p1`` over ``width`` from
    ``at``."""
    rng = random.Random(seed)
    return bytes(
        1 if rng.random() < p0 + (p1 - p0) * min(max(i - at, 0) / width, 1.0) else 0
        for i in range(n)
    )


def test_a_slow_small_rise_is_found_by_the_slow_test_alone() -> None:
    # 5 % -> 12 % over 5,000 examples: the lagged reference follows it.
    errors = _ramp_errors(seed=3, p0=0.05, p1=0.12, at=6_000, width=5_000, n=14_000)
    det = ErrorRiseDetector()
    hits = []
    for i, e in enumerate(errors):
        det.update(e == 1)
        if det.drift_detected:
            assert det.last_drift is not None
            hits.append((i, det.last_drift.test, det.last_drift.onset_index))
    [(index, test, onset)] = hits
    assert 6_000 < index <= 6_000 + 5_000
    assert test == "slow"
    assert 5_000 <= onset <= index  # the run it confirmed started near the ramp
    assert policy_hits(ErrorRiseDetector(), errors, cooldown_events=600) == [index]
    # Without the slow test nothing is found: the feature is what catches it.
    assert policy_hits(ErrorRiseDetector(slow_span=0), errors, cooldown_events=600) == []


def test_a_gradual_sea_drift_of_width_1000_gives_one_request_after_the_ramp_starts() -> None:
    spec = STREAMS["sea-gradual-1000"]
    assert (spec.width, spec.drift, spec.change_points(9_000, 12_000)) == (1_000, True, [9_000])
    # The slow test watches from example 8,000 (warm-up 3,600 + lag 400 + slow_warmup 4,000).
    errors = prequential_errors(spec, seed=3, n_before=9_000, n_after=3_000)
    [index] = policy_hits(ErrorRiseDetector(), errors, cooldown_events=600)
    assert 9_000 <= index <= 9_000 + 2 * spec.width
    assert policy_hits(ErrorRiseDetector(slow_span=0), errors, cooldown_events=600) == []


def test_gradual_streams_switch_concepts_along_a_ramp() -> None:
    names = {f"{b}-gradual-{w}" for b in ("sea", "agrawal", "hyperplane") for w in GRADUAL_WIDTHS}
    assert names <= set(STREAMS) and GRADUAL_WIDTHS == (1_000, 5_000)
    # SEA's concepts differ in the threshold (8 -> 9.5): an example is from the new one when
    # its label disagrees with the old rule.  None before the ramp, all disagreeing ones after.
    spec = STREAMS["sea-gradual-1000"]
    examples = list(itertools.islice(spec.examples(1, 2_000), 6_000))

    def new_share(lo: int, hi: int) -> float:
        band = [(x, y) for x, y in examples[lo:hi] if 8 < x[0] + x[1] <= 9.5]
        return sum(1 for _, y in band if not y) / len(band)

    assert new_share(0, 2_000) == 0.0
    assert 0.2 < new_share(2_000, 3_000) < 0.8
    assert new_share(3_000, 6_000) == 1.0


def test_the_returning_concept_is_a_request_of_its_own() -> None:
    spec = STREAMS["agrawal-recurring"]
    errors = prequential_errors(spec, seed=1, n_before=5_000, n_after=1_000)
    changes = spec.change_points(5_000, len(errors))
    assert changes == [5_000, 5_000 + RECURRENCE_AFTER] and len(errors) == 16_000
    hits = policy_hits(ErrorRiseDetector(), errors, cooldown_events=600)
    assert len(hits) == 2
    for change, hit in zip(changes, hits, strict=True):
        assert change <= hit <= change + 100, (changes, hits)


@pytest.mark.parametrize("stream", ["agrawal-stationary", "sea-noise-stationary"])
def test_the_stationary_controls_stay_quiet_with_the_slow_test(stream: str) -> None:
    errors = prequential_errors(STREAMS[stream], seed=1, n_before=25_000, n_after=0)
    det = ErrorRiseDetector()
    assert policy_hits(det, errors, cooldown_events=600) == []
    assert det.watching  # the slow test was armed for most of the stream


def test_a_stationary_error_rate_and_a_falling_one_stay_quiet() -> None:
    flat = bernoulli_errors(seed=21, p_before=0.2, p_after=0.2, n_before=60_000, n_after=0)
    falling = _ramp_errors(seed=22, p0=0.3, p1=0.05, at=4_000, width=10_000, n=30_000)
    for errors in (flat, falling):
        assert policy_hits(ErrorRiseDetector(), errors, cooldown_events=600) == []


def test_the_slow_test_is_configured_like_any_parameter() -> None:
    params = detector_params("error_rise", {"slow_span": "2000"})
    assert (params["slow_span"], params["slow_shift"], params["slow_rel_shift"]) == (
        2000,
        0.02,
        0.25,
    )
    det = ErrorRiseDetector(slow_span=0)
    assert det.clone().slow_span == 0


def test_eval_scores_each_change_point_of_a_recurring_stream() -> None:
    def run(seed: int, hits: list[int]) -> dict[str, object]:
        return {
            "stream": "agrawal-recurring", "seed": seed, "events": 30_000, "drift_at": 10_000,
            "changes": [10_000, 20_000], "hits": {POLICY: hits}, "seconds": {POLICY: 0.1},
        }  # fmt: skip

    runs = [run(1, [500, 10_010, 20_040]), run(2, [10_020, 10_900, 25_000])]
    summary = summarize(runs, [POLICY])
    first, back = summary["agrawal-recurring"][POLICY], summary["agrawal-recurring/return"][POLICY]
    assert (first["misses"], first["false_alarms"], first["median_delay"]) == (0, 1, 15)
    assert first["extra_after_first"] == 1
    assert (back["misses"], back["false_alarms"], back["median_delay"]) == (0, 0, 2_520)
    missed = summarize([run(1, [10_010])], [POLICY])["agrawal-recurring/return"][POLICY]
    assert (missed["misses"], missed["median_delay"]) == (1, None)


def test_the_issue_18_targets_name_streams_eval_drift_runs() -> None:
    rows = {t.stream for t in TARGETS if t.issue == 18}
    assert rows == {
        *(f"{b}-gradual-{w}" for b in ("sea", "agrawal", "hyperplane") for w in GRADUAL_WIDTHS),
        "agrawal-recurring",
        "agrawal-recurring/return",
    }
    delays = {t.stream: t.limit for t in TARGETS if t.metric == "median_delay" and t.issue == 18}
    assert all(limit == STREAMS[s].width for s, limit in delays.items())
