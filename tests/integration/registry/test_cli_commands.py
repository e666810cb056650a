"""The ``driftline models`` command functions against a running registry."""

from __future__ import annotations

import asyncio

import pytest

from driftline.cli import registry_views
from driftline.contracts.errors import NotFoundError

from .conftest import StartRegistry, client_of, model_name

pytestmark = pytest.mark.integration


async def test_list_show_promote_rollback_history(start_registry: StartRegistry) -> None:
    name = model_name()
    service = await start_registry(token="cli-token")
    target = f"127.0.0.1:{service.grpc_port}"
    async with client_of(service, token="cli-token") as client:
        await client.register(name, b"v1", metrics={"accuracy": 0.61})
        await client.register(name, b"v2", metrics={"accuracy": 0.97}, trigger_id="retrain-9")

    Rows = list[registry_views.Row]

    def run() -> tuple[str, str, Rows, Rows, str, Rows]:
        promoted = registry_views.models_promote(
            target, name, 1, reason="baseline", token="cli-token"
        )
        registry_views.models_promote(target, name, 2, token="cli-token")
        rolled = registry_views.models_rollback(
            target, name, reason="regression", token="cli-token"
        )
        models = [r for r in registry_views.models_list(target) if r["model"] == name]
        versions = registry_views.models_list(target, name)
        shown = registry_views.models_show(target, name, version=2)
        history = registry_views.models_history(target, name)
        return promoted, rolled, models, versions, shown, history

    promoted, rolled, models, versions, shown, history = await asyncio.to_thread(run)
    assert promoted == f"{name}:champion -> v1 (was unset)"
    assert rolled == f"{name}:champion rolled back to v1 (was v2)"
    assert models == [
        {
            "model": name,
            "latest": "2",
            "aliases": "champion=v1",
            "framework": "river",
            "unserved retrains": "",
        }
    ]
    assert [(r["version"], r["aliases"], r["trigger"]) for r in versions] == [
        ("1", "champion", ""),
        ("2", "", "retrain-9"),
    ]
    assert "accuracy=0.97" in versions[1]["metrics"]
    assert f"{name} v2" in shown and "accuracy=0.97" in shown
    assert "framework river" in shown
    assert [r["framework"] for r in versions] == ["river", "river"]
    assert [(r["kind"], r["from"], r["to"], r["reason"]) for r in history] == [
        ("set", "", "1", "baseline"),
        ("set", "1", "2", "promoted from the CLI"),
        ("rolled_back", "2", "1", "regression"),
    ]
    with pytest.raises(NotFoundError):
        await asyncio.to_thread(registry_views.models_show, target, f"{name}-missing")


async def test_list_and_show_report_unserved_retrain_requests(
    start_registry: StartRegistry,
) -> None:
    name = model_name()
    service = await start_registry()
    target = f"127.0.0.1:{service.grpc_port}"
    async with client_of(service) as client:
        await client.register(name, b"v1")
        await client.record_unserved_retrain(
            name, "retrain-7", reason="framework onnx has no trainer", drift_ids=["drift-3"]
        )

    def run() -> tuple[list[registry_views.Row], str]:
        rows = [r for r in registry_views.models_list(target) if r["model"] == name]
        return rows, registry_views.models_show(target, name)

    rows, shown = await asyncio.to_thread(run)
    assert rows[0]["unserved retrains"].startswith("1 (last ")
    assert rows[0]["unserved retrains"].endswith(": framework onnx has no trainer)")
    assert "unserved  1 retrain request(s) since v1" in shown
    assert "retrain-7: framework onnx has no trainer drift drift-3" in shown
