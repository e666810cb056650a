"""Records of ``driftline.models`` no registry wrote: skipped with a reason, never fatal.

The state machine tells an event that lost a race (a conflict: normal with several
writers) from one that could not have been written (it names a model or version the
log never registered); the log follower skips the latter, unreadable records and
events whose application raises, counts each in
``driftline_records_skipped_total{topic, reason}`` and goes on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from driftline.artifacts import ArtifactStore
from driftline.contracts.messages import RegistryEvent, RegistryEventKind
from driftline.contracts.topics import MODELS
from driftline.registry.core import RegistryCore
from driftline.registry.event_log import KafkaRegistryLog
from driftline.registry.registry_metrics import RegistryMetrics
from driftline.registry.state import RegistryState
from driftline.settings import KafkaSettings
from driftline.telemetry import ConsumerHealth, ServiceMetrics

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _event(kind: RegistryEventKind, version: int, **kw: Any) -> RegistryEvent:
    fields: dict[str, Any] = {
        "event_id": f"{kind.value}-{version}-{kw.get('alias', '')}-{kw.get('model_name', 'm')}",
        "kind": kind,
        "model_name": "m",
        "version": version,
        "actor": "a",
        "at": T0,
    }
    if kind is RegistryEventKind.REGISTERED:
        fields.update(sha256="a" * 64, signature="b" * 64, size_bytes=1)
    fields.update(kw)
    return RegistryEvent(**fields)


def _registered(version: int, **kw: Any) -> RegistryEvent:
    return _event(RegistryEventKind.REGISTERED, version, **kw)


def _alias(version: int, **kw: Any) -> RegistryEvent:
    kw.setdefault("alias", "champion")
    return _event(RegistryEventKind.ALIAS_SET, version, **kw)


def test_events_no_registry_writes_carry_a_skip_reason_and_change_nothing() -> None:
    state = RegistryState()
    assert state.apply(_registered(1)).applied
    assert state.apply(_alias(1)).applied
    before = state.snapshot()

    impossible = {
        "unknown_model": [
            _alias(1, model_name="ghost"),
            _event(RegistryEventKind.REJECTED, 1, model_name="ghost"),
        ],
        "unknown_version": [
            _alias(99, previous_version=1),
            _event(RegistryEventKind.ROLLED_BACK, 99, alias="champion", previous_version=1),
            # A rollback always names a version: "to nothing" is not a deletion.
            _event(RegistryEventKind.ROLLED_BACK, 0, alias="champion", previous_version=1),
            _event(RegistryEventKind.REJECTED, 7),
        ],
        "invalid": [
            _registered(5),  # skips numbers 2-4: no writer numbers so
            _registered(-1),
            _registered(2, model_name="../etc"),
            _registered(2, sha256=None),
            _alias(1, alias="production", previous_version=1),
        ],
    }
    for reason, events in impossible.items():
        for event in events:
            outcome = state.apply(event)
            assert not outcome.applied, event
            assert outcome.skip_reason == reason, (event, outcome)
    assert state.snapshot() == before
    assert state.models["m"].aliases == {"champion": 1}


def test_an_event_that_lost_a_race_is_ignored_without_a_skip_reason() -> None:
    state = RegistryState()
    state.apply(_registered(1))
    lost = state.apply(_registered(1, event_id="other-replica"))
    assert not lost.applied and lost.skip_reason is None and "conflict" in lost.reason
    stale = state.apply(_alias(1, event_id="cas", previous_version=3))
    assert not stale.applied and stale.skip_reason is None


async def _no_writes(event: RegistryEvent) -> None:
    raise AssertionError("nothing is written here")


def test_the_follower_skips_bad_records_and_applies_the_next_good_one(tmp_path: Path) -> None:
    base = ServiceMetrics("registry")
    health = ConsumerHealth(base.registry, stall_after_s=60)
    log = KafkaRegistryLog(KafkaSettings(), RegistryMetrics(base), health)
    core = RegistryCore(ArtifactStore(str(tmp_path)), "key", _no_writes)
    records: list[bytes | None] = [
        b"not json",
        None,  # a tombstone
        b'{"event_id": "\xff\xfe"}',  # invalid UTF-8
        b'{"event_id": "x", "kind": "registered"}',  # wrong schema
        _alias(1, model_name="ghost").model_dump_json().encode(),
        # The state cannot hold these params: applying it raises, the replay goes on.
        _registered(1, event_id="bad-params", spec={"_registry": {"params": "not a mapping"}})
        .model_dump_json()
        .encode(),
        _registered(1).model_dump_json().encode(),
        _alias(3).model_dump_json().encode(),
        _alias(1).model_dump_json().encode(),
    ]
    for offset, value in enumerate(records):
        log.apply_record(core, value, 0, offset)

    assert core.get("m", alias="champion").version == 1
    assert core.state.version_count == 1
    skipped = {
        reason: health.skipped(MODELS.name, reason)
        for reason in ("unreadable", "unknown_model", "unknown_version", "processing_error")
    }
    assert skipped == {
        "unreadable": 4,
        "unknown_model": 1,
        "unknown_version": 1,
        "processing_error": 1,
    }
    text = base.render().decode()
    assert 'driftline_registry_events_total{outcome="invalid"} 5.0' in text
    assert (
        'driftline_records_skipped_total{reason="processing_error",topic="driftline.models"} 1.0'
        in text
    )
