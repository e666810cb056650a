"""The reliability suite's platform: Kafka, Redis and the six services, one per test module.

Each module gets a platform of its own (a broker and a redis-server holding
nothing but its records, the services on free ports) because its tests break
things on purpose.  Training snapshots a candidate every 300 labels and needs 200
for the first champion, so that one exists within seconds of the first stream; the registry
requires a token for mutating calls (training is given it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.platform import LivePlatform, fast_loop_env

REGISTRY_TOKEN = "chaos-registry-token"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePlatform]:
    """A running platform, stopped (services, Redis, broker) after the module's tests."""
    root: Path = tmp_path_factory.mktemp("chaos")
    live = LivePlatform(root, fast_loop_env(root, REGISTRY_TOKEN))
    try:
        live.start(timeout_s=180.0)
        yield live
    finally:
        live.stop()
