"""The label join's memory is bounded: packed waiting records, a cap, compacted deadlines.

Without these a trainer holds rate times allowed lateness parsed vectors (~2.5 KB each:
tens of GB at 5,000 events/s with the default hour of lateness).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from driftline.contracts.messages import FeatureVector, ValidLabel
from driftline.settings import TrainingSettings
from driftline.specs import load_model_spec
from driftline.training.candidates import InMemorySink
from driftline.training.core import TrainingCore
from driftline.training.label_join import LabelJoin, Position
from driftline.training.service import core_config
from driftline.training.training_metrics import TrainingCollector

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
N = 10_000
NAMES = [f"feature_{k:02d}" for k in range(16)]

# Measured (CPython 3.11, uuid event ids, a Position each): ~500 B a waiting vector of
# 16 float features, ~370 B a waiting label; the parsed objects the join held before
# took ~2,550 B and ~1,620 B.
MAX_VECTOR_BYTES = 700
MAX_LABEL_BYTES = 600


def _at(ms: int) -> str:
    return (T0 + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def _vector_records() -> Iterator[bytes]:
    """Feature-log records as training reads them (JSON), 16 float features each."""
    for i in range(N):
        yield json.dumps({
            "event_id": str(uuid.uuid4()), "entity_id": f"customer-{i % 5000}",
            "event_time": _at(i), "featureset": "loans", "featureset_version": 3,
            "values": {n: i * 0.37 + k for k, n in enumerate(NAMES)}, "produced_at": _at(i),
        }).encode()  # fmt: skip


def _label_records() -> Iterator[bytes]:
    for i in range(N):
        yield json.dumps({
            "event_id": str(uuid.uuid4()), "entity_id": f"customer-{i % 5000}",
            "event_time": _at(i), "label": i % 2 == 0, "ingested_at": _at(i),
        }).encode()  # fmt: skip


def _retained_bytes(feed: Callable[[], None], warm_up: Callable[[], None] | None = None) -> int:
    """Bytes still allocated after ``feed`` ran and its garbage was collected (what
    ``warm_up`` left behind, traced too, is not counted)."""
    gc.collect()
    tracemalloc.start()
    try:
        if warm_up is not None:
            warm_up()
            gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        feed()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_waiting_vector_is_held_in_a_few_hundred_bytes() -> None:
    records = list(_vector_records())
    join: LabelJoin[None] = LabelJoin(allowed_lateness_s=10**9, orphan_retention_s=3600)

    def feed() -> None:
        for i, raw in enumerate(records):
            vector = FeatureVector.model_validate_json(raw)
            join.add_vector(vector, Position("driftline.features", i % 3, 10**6 + i), _none)

    per_entry = _retained_bytes(feed) / N
    assert join.pending == N
    assert per_entry < MAX_VECTOR_BYTES, f"{per_entry:.0f} B a waiting vector"


def test_a_waiting_label_is_held_in_a_few_hundred_bytes() -> None:
    records = list(_label_records())
    join: LabelJoin[None] = LabelJoin(allowed_lateness_s=10**9, orphan_retention_s=10**9)

    def feed() -> None:
        for i, raw in enumerate(records):
            label = ValidLabel.model_validate_json(raw)
            join.add_label(label, Position("driftline.labels.valid", i % 3, 10**6 + i))

    per_entry = _retained_bytes(feed) / N
    assert join.orphans == N
    assert per_entry < MAX_LABEL_BYTES, f"{per_entry:.0f} B a waiting label"


def test_deadlines_of_joined_vectors_do_not_pile_up() -> None:
    """Every vector labelled at once: the join's memory stays flat however long the
    lateness (the deadline of a joined vector used to stay until the watermark passed)."""
    join: LabelJoin[None] = LabelJoin(
        allowed_lateness_s=10**9, orphan_retention_s=10**9, seen_capacity=100
    )
    warm_up = [raw for _ in range(3) for raw in _vector_records()]
    measured = list(_vector_records())

    def feed(records: list[bytes] = measured) -> None:
        for i, raw in enumerate(records):
            v = FeatureVector.model_validate_json(raw)
            join.add_vector(v, Position("f", 0, i), _none)
            lab = ValidLabel(
                event_id=v.event_id,
                entity_id=v.entity_id,
                event_time=v.event_time,
                label=1,
                ingested_at=v.event_time,
            )
            assert join.add_label(lab, Position("l", 0, i)) is not None

    # pydantic-core caches (16,384 of) the strings it parses: the warm-up fills the cache
    # with traced strings, so that those the measured run replaces count as freed.
    retained = _retained_bytes(feed, lambda: feed(warm_up))
    assert join.pending == 0 and join.stats.joined == 4 * N
    assert retained < 200_000, f"{retained} B retained after {N} joined vectors"


def test_the_cap_drops_the_oldest_vectors_and_counts_them(
    make_vector: Callable[..., FeatureVector], make_label: Callable[..., ValidLabel]
) -> None:
    join: LabelJoin[int] = LabelJoin(allowed_lateness_s=10**6, orphan_retention_s=10, max_pending=3)
    # Event times out of arrival order: the cap drops by event time, oldest first.
    for i in (5, 2, 8, 1, 9, 3):
        join.add_vector(make_vector(i), Position("f", 0, i), lambda v: int(v.values["x"]))
        assert join.pending <= 3
    assert join.stats.vectors_over_cap == 3
    assert join.stats.evicted_unlabeled == 0
    # The three newest still join; the dropped ones' labels are orphans that never do.
    joined = [join.add_label(make_label(i), None) for i in (5, 8, 9)]
    assert [j.attachment for j in joined if j] == [5, 8, 9]
    assert [join.add_label(make_label(i), None) for i in (1, 2, 3)] == [None] * 3
    assert join.stats.orphan_labels == 3 and join.orphans == 3
    # A dropped vector no longer holds back the consumer's commits.
    assert join.oldest_unfinished() == {}


def test_the_cap_drops_the_oldest_orphan_labels_and_counts_them(
    make_vector: Callable[..., FeatureVector], make_label: Callable[..., ValidLabel]
) -> None:
    join: LabelJoin[int] = LabelJoin(
        allowed_lateness_s=10**6, orphan_retention_s=10**6, max_pending=2
    )
    for i in (4, 1, 7):
        join.add_label(make_label(i), Position("l", 0, i))
    assert join.orphans == 2 and join.stats.orphans_over_cap == 1
    assert join.add_vector(make_vector(1), None, lambda v: 1) is None  # its label was dropped
    assert join.add_vector(make_vector(4), None, lambda v: 4) is not None
    assert join.stats.orphans_joined == 1


def test_dropping_is_logged_at_most_once_a_minute(
    make_vector: Callable[..., FeatureVector], caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    join: LabelJoin[int] = LabelJoin(
        allowed_lateness_s=10**6, orphan_retention_s=10, max_pending=1, name="loans",
        clock=lambda: now[0],
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="driftline.training.label_join"):
        for i in range(50):
            join.add_vector(make_vector(i), None, lambda v: 0)
            now[0] += 1.0  # 50 s in all
        assert len(caplog.records) == 1
        now[0] += 12.0  # 61 s after the first warning
        join.add_vector(make_vector(50), None, lambda v: 0)
    assert join.stats.vectors_over_cap == 50
    assert len(caplog.records) == 2
    last = caplog.records[-1].getMessage()
    assert "label join of loans" in last and "training.label_join_max_pending" in last
    assert "dropped the oldest 49 unlabeled vectors" in last


def test_a_label_for_a_waiting_vector_joins_it_exactly_as_it_came() -> None:
    """The packed vector comes back equal, value for value and type for type."""
    at = datetime(2026, 3, 4, 5, 6, 7, 123457, tzinfo=UTC)
    values: dict[str, Any] = {
        "salary": 72000.25, "elevel": 3, "big": 2**70, "neg": -(2**63), "flag": True,
        "off": False, "missing": None, "city": "Zürich", "zero": -0.0, "huge": 1e308,
        "tiny": 5e-324, "inf": math.inf,
    }  # fmt: skip
    vector = FeatureVector(event_id="e-1", entity_id="cüstomer 7", event_time=at,
                           featureset="loans", featureset_version=4, values=values,
                           produced_at=at + timedelta(microseconds=1))  # fmt: skip
    nan = vector.model_copy(update={"event_id": "e-2", "values": {"x": math.nan, "y": 1}})
    join: LabelJoin[str] = LabelJoin(allowed_lateness_s=60, orphan_retention_s=60)
    assert join.add_vector(vector, Position("driftline.features", 2, 41), lambda v: "p") is None
    assert join.add_vector(nan, None, lambda v: "q") is None
    lab = ValidLabel(event_id="e-1", entity_id="cüstomer 7", event_time=at, label=1,
                     ingested_at=at)  # fmt: skip
    joined = join.add_label(lab, Position("driftline.labels.valid", 0, 9))
    assert joined is not None
    assert joined.vector == vector
    assert joined.vector.model_dump_json() == vector.model_dump_json()
    assert [type(v) for v in joined.vector.values.values()] == [type(v) for v in values.values()]
    assert list(joined.vector.values) == list(values)
    assert math.copysign(1.0, joined.vector.values["zero"]) == -1.0
    assert joined.vector.event_time.tzinfo is not None
    assert (joined.label, joined.attachment, joined.late) == (lab, "p", False)
    assert joined.vector_pos == Position("driftline.features", 2, 41)
    assert joined.label_pos == Position("driftline.labels.valid", 0, 9)
    joined_nan = join.add_label(lab.model_copy(update={"event_id": "e-2"}), None)
    assert joined_nan is not None and joined_nan.vector_pos is None
    assert math.isnan(joined_nan.vector.values["x"]) and joined_nan.vector.values["y"] == 1


@pytest.mark.parametrize("featureset", [None, "loans", ...])
def test_an_orphan_label_joins_exactly_as_it_came(
    make_vector: Callable[..., FeatureVector], featureset: Any
) -> None:
    at = datetime(2026, 1, 1, 0, 0, 1, 999999, tzinfo=UTC)
    fields: dict[str, Any] = {
        "event_id": "e1",
        "entity_id": "c1",
        "event_time": at,
        "label": "gold",
        "ingested_at": at + timedelta(hours=1),
    }
    if featureset is not ...:
        fields["featureset"] = featureset
    lab = ValidLabel(**fields)
    join: LabelJoin[int] = LabelJoin(allowed_lateness_s=60, orphan_retention_s=60)
    assert join.add_label(lab, Position("l", 1, 7)) is None
    joined = join.add_vector(make_vector(1), None, lambda v: 0)
    assert joined is not None
    assert joined.label == lab and joined.label_pos == Position("l", 1, 7)
    assert joined.label.model_fields_set == lab.model_fields_set
    assert joined.label.model_dump_json(exclude_unset=True) == lab.model_dump_json(
        exclude_unset=True
    )


def test_the_setting_caps_each_models_join_and_the_drops_are_exported(
    make_vector: Callable[..., FeatureVector],
) -> None:
    cfg = TrainingSettings(label_join_max_pending=2)
    spec = load_model_spec(ROOT / "examples" / "models" / "loans.yaml")
    core = TrainingCore(spec, InMemorySink(), core_config(cfg))
    assert TrainingSettings().label_join_max_pending == 200_000
    registry = CollectorRegistry()
    registry.register(TrainingCollector([core]))
    for i in range(5):
        core.on_vector(make_vector(i, values={"salary": 1.0 * i}), Position("f", 0, i))
    assert core.join.pending == 2
    text = generate_latest(registry).decode()
    assert (
        'driftline_training_join_records_total{model="loans",outcome="vectors_over_cap"} 3.0'
        in text
    )
    assert 'driftline_training_join_waiting{model="loans",side="vectors"} 2.0' in text


def _none(_: FeatureVector) -> None:
    return None
