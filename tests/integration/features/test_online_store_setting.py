"""The features service refuses a bad ``features.online_store`` before it connects anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.devtools.infra import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        (
            {"DRIFTLINE_FEATURES__ONLINE_STORE__URL": "http://cache:6379"},
            "features.online_store.url: Value error, must be a redis://host:port/db URL",
        ),
        (
            {"DRIFTLINE_FEATURES__ONLINE_STORE__TYPE": "dynamodb"},
            "features.online_store.type: no online store type 'dynamodb' (known: redis",
        ),
    ],
)
def test_a_bad_store_setting_exits_2_naming_the_field(setting: dict[str, str], named: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        # Nothing listens here: the service must stop at the setting, before any wait.
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        DRIFTLINE_FEATURES__ADMIN__PORT=str(free_port()),
        DRIFTLINE_FEATURES__FEATURESETS_DIR=str(ROOT / "examples" / "featuresets"),
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
        **setting,
    )
    done = subprocess.run(
        [sys.executable, "-m", "driftline.features"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "driftline features: invalid online store settings:" in done.stderr
    assert named in done.stderr, done.stderr[-2000:]
