"""The demo's scenario: a seeded Agrawal loan stream with an abrupt concept drift."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from river import tree

from driftline.contracts.messages import RawEvent, RawLabel
from driftline.devtools.scenario import ScenarioConfig, applications, schedule
from driftline.specs import load_featuresets

_REPO = Path(__file__).resolve().parents[2]


def _cfg(**kw: object) -> ScenarioConfig:
    base: dict[str, object] = {"events": 600, "drift_at": 300, "label_delay": 25, "seed": 7}
    base.update(kw)
    return ScenarioConfig(**base)  # type: ignore[arg-type]


def test_same_seed_gives_the_same_stream_and_another_seed_does_not() -> None:
    a = list(schedule(_cfg()))
    b = list(schedule(_cfg()))
    c = list(schedule(_cfg(seed=8)))
    assert a == b
    assert [s.application.features for s in a] != [s.application.features for s in c]
    assert [s.application.entity_id for s in a] != [s.application.entity_id for s in c]


def test_the_concept_switches_exactly_at_drift_at() -> None:
    apps = list(applications(_cfg(function_before=2, function_after=0)))
    assert [a.concept for a in apps[:300]] == [2] * 300
    assert [a.concept for a in apps[300:]] == [0] * 300
    assert not any(a.after_drift for a in apps[:300])
    assert all(a.after_drift for a in apps[300:])


def test_every_label_follows_its_event_by_the_delay() -> None:
    cfg = _cfg(events=200, label_delay=25)
    steps = list(schedule(cfg))
    position: dict[tuple[str, int], int] = {}
    for n, step in enumerate(steps):
        position[(step.kind, step.application.index)] = n
    assert Counter(s.kind for s in steps) == {"event": 200, "label": 200}
    for i in range(200):
        label_at = position[("label", i)]
        # the label comes after event i + delay (or after the last event) ...
        follows = min(i + 25, 199)
        assert label_at > position[("event", follows)]
        # ... and before the next event.
        if follows + 1 < 200:
            assert label_at < position[("event", follows + 1)]


def test_zero_delay_puts_each_label_right_after_its_event() -> None:
    steps = list(schedule(_cfg(events=50, label_delay=0)))
    assert [(s.kind, s.application.index) for s in steps] == [
        (kind, i) for i in range(50) for kind in ("event", "label")
    ]


def test_entities_come_back_with_zipf_like_reuse() -> None:
    apps = list(applications(_cfg(events=5000, customers=500)))
    counts = Counter(a.entity_id for a in apps).most_common()
    # a pool, not one id per event; the busiest customer has a long history ...
    assert len(counts) <= 500
    assert counts[0][1] >= 50
    # ... and the head of the distribution carries far more than the tail.
    assert counts[0][1] > 10 * counts[len(counts) // 2][1]


def test_ids_and_event_times_are_unique_and_ordered() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    apps = list(applications(_cfg(events=100, start=start, interval=timedelta(milliseconds=250))))
    assert len({a.event_id for a in apps}) == 100
    assert [a.event_time for a in apps] == [
        start + i * timedelta(milliseconds=250) for i in range(100)
    ]


def test_records_validate_against_the_contracts_and_the_loans_featureset() -> None:
    loans = load_featuresets(_REPO / "examples" / "featuresets").resolve("loans")
    for app in applications(_cfg(events=300)):
        event = RawEvent.model_validate_json(app.raw_event().model_dump_json())
        label = RawLabel.model_validate_json(app.raw_label().model_dump_json())
        assert event.event_id == label.event_id == app.event_id
        assert event.featureset == "loans"
        # every value passes the feature set's types and constraints (raises otherwise)
        assert loans.validate_features(event.features) == event.features
        assert label.label in (0, 1)


def test_a_tree_that_learned_the_old_rule_loses_accuracy_at_the_drift() -> None:
    # The demo's defaults (2 -> 0) and the demo model spec's tree.
    cfg = _cfg(events=4500, drift_at=4000)
    model = tree.HoeffdingAdaptiveTreeClassifier(
        grace_period=100,
        delta=1e-5,
        leaf_prediction="nba",
        nominal_attributes=["elevel", "car", "zipcode"],
        seed=42,
    )
    hits: list[bool] = []
    for app in applications(cfg):
        x: dict[Any, Any] = dict(app.features)
        hits.append(model.predict_one(x) == app.label)
        model.learn_one(x, app.label)  # type: ignore[no-untyped-call]
    before = sum(hits[3000:4000]) / 1000
    after = sum(hits[4000:4500]) / 500
    assert before > 0.9
    assert before - after > 0.2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("events", -1),
        ("label_delay", -3),
        ("function_after", 10),
        ("customers", 0),
        ("interval", timedelta(0)),
        ("start", datetime(2026, 1, 1)),
    ],
)
def test_bad_knobs_are_refused_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        _cfg(**{field: value})
