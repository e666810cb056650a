"""The label join: late, out-of-order, orphan and duplicate records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from driftline.training.label_join import LabelJoin, Position

vector: Callable[..., Any]
label: Callable[..., Any]


@pytest.fixture(autouse=True)
def _factories(make_vector: Callable[..., Any], make_label: Callable[..., Any]) -> None:
    global vector, label
    vector, label = make_vector, make_label


def _join(lateness: float = 10, retention: float = 10) -> LabelJoin[int]:
    return LabelJoin(
        allowed_lateness_s=lateness, orphan_retention_s=retention, expired_capacity=100
    )


def test_out_of_order_labels_join_their_own_vectors() -> None:
    join = _join(lateness=100)
    for i in range(5):
        assert join.add_vector(vector(i), None, lambda v: int(v.values["x"])) is None
    joined = [join.add_label(label(i, y=i % 2), None) for i in (3, 0, 4, 1, 2)]
    assert [(j.event_id, j.attachment, j.label.label) for j in joined if j] == [
        ("e3", 3, 1), ("e0", 0, 0), ("e4", 4, 0), ("e1", 1, 1), ("e2", 2, 0)
    ]  # fmt: skip
    assert join.pending == 0
    assert join.stats.joined == 5


def test_orphan_label_waits_for_its_vector() -> None:
    join = _join()
    assert join.add_label(label(1), None) is None
    assert join.stats.orphan_labels == 1 and join.orphans == 1
    joined = join.add_vector(vector(1), None, lambda v: 7)
    assert joined is not None and joined.attachment == 7
    assert join.stats.orphans_joined == 1 and join.orphans == 0


def test_unlabeled_vectors_are_evicted_and_a_late_label_still_joins() -> None:
    join = _join(lateness=10)
    join.add_vector(vector(0), None, lambda v: 0)
    join.add_vector(vector(50), None, lambda v: 50)  # watermark 40 > 0: e0 evicted
    assert join.stats.evicted_unlabeled == 1
    assert join.pending == 1
    late = join.add_label(label(0), None)
    assert late is not None and late.late
    assert join.stats.late_labels == 1


def test_orphans_expire_after_the_retention_and_are_counted() -> None:
    join = _join(lateness=10, retention=5)
    join.add_label(label(0), None)
    join.add_vector(vector(100), None, lambda v: 0)  # watermark 90 > 0 + 5
    assert join.stats.orphans_expired == 1 and join.orphans == 0
    # Every label is accounted for.
    s = join.stats
    assert s.labels == s.orphan_labels + s.duplicate_labels + (s.joined - s.orphans_joined)


def test_duplicates_are_recognised_by_event_id() -> None:
    join = _join(lateness=100)
    calls: list[str] = []
    join.add_vector(vector(1), None, lambda v: calls.append(v.event_id) or 0)
    join.add_vector(vector(1), None, lambda v: calls.append(v.event_id) or 0)
    assert calls == ["e1"]  # no second prediction for a duplicate
    assert join.add_label(label(1), None) is not None
    assert join.add_label(label(1), None) is None
    join.add_vector(vector(1), None, lambda v: 0)  # redelivered after the join
    assert join.stats.duplicate_vectors == 2
    assert join.stats.duplicate_labels == 1
    assert join.stats.joined == 1


def test_oldest_unfinished_offsets_hold_back_commits() -> None:
    join = _join(lateness=100)
    join.add_vector(vector(1), Position("f", 0, 10), lambda v: 0)
    join.add_vector(vector(2), Position("f", 0, 11), lambda v: 0)
    join.add_label(label(9), Position("l", 2, 5))  # orphan
    join.add_label(label(1), Position("l", 2, 6))
    assert join.oldest_unfinished() == {("f", 0): 11, ("l", 2): 5}
