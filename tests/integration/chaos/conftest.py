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
from support.platform import ROOT, LivePlatform

REGISTRY_TOKEN = "chaos-registry-token"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePlatform]:
    """A running platform, stopped (services, Redis, broker) after the module's tests."""
    root: Path = tmp_path_factory.mktemp("chaos")
    # The demo's model, made ready for a champion after 200 labels instead of 1,000.
    models = root / "models"
    models.mkdir()
    spec = (ROOT / "examples" / "models" / "loans.yaml").read_text()
    for before, after in (
        ("min_examples: 1000", "min_examples: 200"),
        ("min_eval_examples: 500", "min_eval_examples: 100"),
    ):
        assert before in spec, f"examples/models/loans.yaml no longer has {before!r}"
        spec = spec.replace(before, after)
    (models / "loans.yaml").write_text(spec)
    live = LivePlatform(
        root,
        {
            "DRIFTLINE_TRAINING__MODELS_DIR": str(models),
            "DRIFTLINE_TRAINING__SNAPSHOT_EVERY": "300",
            "DRIFTLINE_REGISTRY__TOKEN": REGISTRY_TOKEN,
            "DRIFTLINE_TRAINING__REGISTRY_TOKEN": REGISTRY_TOKEN,
        },
    )
    try:
        live.start(timeout_s=180.0)
        yield live
    finally:
        live.stop()
