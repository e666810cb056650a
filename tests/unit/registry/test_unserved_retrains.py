"""Retrain requests Driftline cannot serve: kept on the model until a newer version, once
per request id, replayed identically, counted on /metrics, followed by the dashboard, and
ignored by the other readers of ``driftline.models``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from driftline.contracts.errors import InvalidArgumentError, NotFoundError
from driftline.contracts.messages import RegistryEvent, RegistryEventKind
from driftline.monitoring.dashboard import ChartedMonitorCore, dashboard_snapshot
from driftline.registry.core import Registration
from driftline.registry.registry_metrics import RegistryMetrics
from driftline.registry.state import RegistryState
from driftline.settings import MonitoringSettings
from driftline.telemetry import ServiceMetrics

from .test_state import Clock, LoopbackLog, make_core

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


async def test_requests_are_kept_once_each_until_a_newer_version(tmp_path: Path) -> None:
    log = LoopbackLog()
    core = make_core(tmp_path, log)
    await core.register(Registration(name="risk"), b"v1")
    await core.register(Registration(name="other"), b"o1")
    assert (
        await core.record_unserved_retrain(
            "risk", "req-1", "framework onnx has no trainer", actor="training", drift_ids=["d-1"]
        )
        == 1
    )
    assert await core.record_unserved_retrain("risk", "req-2", "again", drift_ids=[]) == 2
    # The same request again: nothing written, nothing added.
    events_before = len(log.events)
    assert await core.record_unserved_retrain("risk", "req-1", "framework onnx has no trainer") == 2
    assert len(log.events) == events_before

    summary = {m.name: m for m in core.list_models()}
    assert [(u.request_id, u.reason, u.drift_ids) for u in summary["risk"].unserved_retrains] == [
        ("req-1", "framework onnx has no trainer", ["d-1"]),
        ("req-2", "again", []),
    ]
    assert summary["other"].unserved_retrains == []
    assert log.events[-1].kind is RegistryEventKind.RETRAIN_UNSERVED

    # A newer version answers them; a request recorded before stays recorded (idempotent).
    await core.register(Registration(name="risk"), b"v2")
    assert {m.name: m for m in core.list_models()}["risk"].unserved_retrains == []
    assert await core.record_unserved_retrain("risk", "req-1", "replayed by training") == 0
    assert await core.record_unserved_retrain("risk", "req-3", "drift again") == 1

    # The log rebuilds the same state on any replica.
    replayed = RegistryState()
    for event in log.events:
        replayed.apply(event)
    assert replayed.snapshot() == core.state.snapshot()


async def test_bad_requests_are_refused(tmp_path: Path) -> None:
    core = make_core(tmp_path, LoopbackLog())
    with pytest.raises(NotFoundError, match="model 'ghost' is not registered"):
        await core.record_unserved_retrain("ghost", "req-1", "no trainer")
    await core.register(Registration(name="risk"), b"v1")
    with pytest.raises(InvalidArgumentError, match="request_id is empty"):
        await core.record_unserved_retrain("risk", "", "no trainer")
    with pytest.raises(InvalidArgumentError, match="at most 100 ids"):
        await core.record_unserved_retrain(
            "risk", "r", "x", drift_ids=[f"d{i}" for i in range(101)]
        )


def _unserved(version: int, request: str, event_id: str) -> RegistryEvent:
    return RegistryEvent(
        event_id=event_id,
        kind=RegistryEventKind.RETRAIN_UNSERVED,
        model_name="risk",
        version=version,
        actor="training",
        reason="no trainer",
        trigger=request,
        at=T0,
        spec={"_registry": {"drift_ids": ["d-9"]}},
    )


def _registered(version: int) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"reg-{version}",
        kind=RegistryEventKind.REGISTERED,
        model_name="risk",
        version=version,
        actor="cli",
        at=T0,
        sha256="ab" * 32,
        signature="sig",
        spec={"_registry": {"framework": "onnx", "artifact_format": "onnx"}},
    )


def test_a_request_written_before_a_newer_version_on_the_log_is_stale() -> None:
    state = RegistryState()
    assert state.apply(_registered(1)).applied
    # Replica A recorded the request while v1 was latest; replica B's v2 came first on the log.
    assert state.apply(_registered(2)).applied
    stale = state.apply(_unserved(1, "req-1", "u-1"))
    assert not stale.applied and stale.reason.startswith("stale:") and stale.skip_reason is None
    assert state.summaries()[0].unserved_retrains == []
    assert state.summaries()[0].framework == "onnx"
    # Events no registry writes are skipped with a reason the follower reports.
    assert state.apply(_unserved(5, "req-2", "u-2")).skip_reason == "unknown_version"
    ghost = _unserved(1, "req-3", "u-3").model_copy(update={"model_name": "ghost"})
    assert state.apply(ghost).skip_reason == "unknown_model"
    assert state.apply(_unserved(2, "", "u-4")).skip_reason == "invalid"


async def test_the_gauge_has_every_model_at_zero_and_counts_unserved_requests(
    tmp_path: Path,
) -> None:
    core = make_core(tmp_path, LoopbackLog(), Clock())
    metrics = RegistryMetrics(ServiceMetrics("registry"))
    metrics.track_champions(lambda: core.state)
    await core.register(Registration(name="risk"), b"v1")
    await core.register(Registration(name="loans"), b"v1")
    await core.record_unserved_retrain("risk", "req-1", "no trainer")
    text = generate_latest(metrics.base.registry).decode()
    assert 'driftline_registry_unserved_retrains{model="risk"} 1.0' in text
    assert 'driftline_registry_unserved_retrains{model="loans"} 0.0' in text
    await core.register(Registration(name="risk"), b"v2")
    text = generate_latest(metrics.base.registry).decode()
    assert 'driftline_registry_unserved_retrains{model="risk"} 0.0' in text


def test_the_dashboard_shows_open_requests_and_the_monitor_ignores_them_otherwise() -> None:
    core = ChartedMonitorCore(MonitoringSettings())
    core.on_registry(_registered(1))
    before = dict(core.counts)
    core.on_registry(_unserved(1, "req-1", "u-1"))
    core.on_registry(_unserved(1, "req-1", "u-1b"))  # the same request: shown once
    assert core.models.get("risk") is None or core.models["risk"].champion_version is None
    snap = dashboard_snapshot(core)
    assert [
        (u["request_id"], u["reason"], u["drift_ids"]) for u in snap["unserved_retrains"]["risk"]
    ] == [("req-1", "no trainer", ["d-9"])]
    markers = [m for m in snap["markers"] if m["kind"] == "retrain_unserved"]
    assert [(m["model"], m["request_id"]) for m in markers] == [("risk", "req-1")]
    core.sample(100.0)
    assert core.series.series("unserved_retrains/risk") == [(100.0, 1.0)]
    assert core.counts["registry"] == before["registry"] + 2
    # A newer version clears them, as in the registry.
    core.on_registry(_registered(2))
    assert "risk" not in dashboard_snapshot(core)["unserved_retrains"]
    core.sample(101.0)
    assert core.series.series("unserved_retrains/risk")[-1] == (101.0, 0.0)


async def test_serving_ignores_the_new_kind() -> None:
    from driftline.serving.memory_sources import InMemoryModelSource
    from driftline.serving.model_table import ModelTable

    source = InMemoryModelSource()
    table = ModelTable(source)
    assert await table.apply(_unserved(1, "req-1", "u-1")) is False
    assert table.loaded_aliases() == {}
