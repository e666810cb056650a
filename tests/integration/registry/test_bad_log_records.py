"""Records on ``driftline.models`` no registry wrote: the registry skips them and keeps serving.

Written with kcat while ``python -m driftline.registry`` runs: unreadable records
(not JSON, invalid UTF-8, a tombstone, the wrong schema) and events that cannot be
right (an alias moved on a model or to a version never registered, a rollback to
nothing, a registration whose attributes the state cannot hold).  The registry
still answers ListVersions / GetVersion, a later registration is applied, each
bad record shows in ``driftline_records_skipped_total`` on /metrics, and a
replica started afterwards replays the log past them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.internal_records import GARBAGE, delta, kcat_produce, scrape_skipped

from driftline.contracts.messages import RegistryEvent, RegistryEventKind
from driftline.contracts.topics import MODELS
from driftline.devtools.infra import free_port
from driftline.registry_client import RegistryClient

from .conftest import SIGNING_KEY, StartRegistry, client_of, model_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "bad-records-token"


def _event(kind: RegistryEventKind, model: str, version: int, **kw: Any) -> bytes:
    event = RegistryEvent(
        event_id=uuid.uuid4().hex,
        kind=kind,
        model_name=model,
        version=version,
        actor="kcat",
        at=datetime.now(UTC),
        **kw,
    )
    return event.model_dump_json().encode()


async def _ready(admin: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if (await http.get(f"{admin}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"registry never became ready:\n{log.read_text()}"
            await asyncio.sleep(0.2)


async def test_bad_records_are_skipped_and_the_registry_keeps_serving(
    kafka: Any, tmp_path: Path, start_registry: StartRegistry
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    admin_port, grpc_port = free_port(), free_port()
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DRIFTLINE_REGISTRY__GRPC_PORT=str(grpc_port),
        DRIFTLINE_REGISTRY__ADMIN__PORT=str(admin_port),
        DRIFTLINE_REGISTRY__ARTIFACT_DIR=str(tmp_path / "artifacts"),
        DRIFTLINE_REGISTRY__SIGNING_KEY=SIGNING_KEY,
        DRIFTLINE_REGISTRY__TOKEN=TOKEN,
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
    )
    admin, target = f"http://127.0.0.1:{admin_port}", f"127.0.0.1:{grpc_port}"
    log = tmp_path / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.registry"], env=env, cwd=ROOT, stdout=out, stderr=out
        )
    try:
        await _ready(admin, proc, log)
        name = model_name()
        async with RegistryClient(target, token=TOKEN, timeout_s=20) as client:
            await client.register(name, b"artifact-1")
            await client.set_alias(name, "champion", 1)
            before = await scrape_skipped(admin)

            kcat_produce(
                kafka.bootstrap_servers,
                MODELS,
                [
                    *GARBAGE.values(),
                    _event(RegistryEventKind.ALIAS_SET, f"ghost-{name}", 1, alias="champion"),
                    _event(
                        RegistryEventKind.ALIAS_SET, name, 99, alias="champion", previous_version=1
                    ),
                    _event(
                        RegistryEventKind.ROLLED_BACK, name, 0, alias="champion", previous_version=1
                    ),
                    # The next number, but attributes the registry's state cannot hold.
                    _event(
                        RegistryEventKind.REGISTERED,
                        name,
                        2,
                        sha256="a" * 64,
                        signature="b" * 64,
                        spec={"_registry": {"params": "not a mapping"}},
                    ),
                ],
                key=name,
            )
            # A registration after them returns only once the follower has applied it.
            v2 = await client.register(name, b"artifact-2")
            assert v2.version == 2
            assert [v.version for v in await client.list_versions(name)] == [1, 2]
            assert (await client.get(name, alias="champion")).version == 1

        expected = {
            (MODELS.name, "unreadable"): 4.0,
            (MODELS.name, "unknown_model"): 1.0,
            (MODELS.name, "unknown_version"): 2.0,
            (MODELS.name, "processing_error"): 1.0,
        }
        assert delta(await scrape_skipped(admin), before) == expected
        text = log.read_text()
        assert text.count("skipped the record at driftline.models[0]@") >= 8
        assert "processing_error: ValueError" in text  # with the error that was raised
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            assert proc.wait(20) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()

    # A replica started now replays the whole log, past every bad record.
    replica = await start_registry()
    async with client_of(replica) as client:
        assert [v.version for v in await client.list_versions(name)] == [1, 2]
        assert (await client.get(name, alias="champion")).version == 1
    assert replica.consumer_health.skipped(MODELS.name, "processing_error") >= 1
