"""Headless Chromium for tests that check what a page shows (the dashboard, trace pages)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

__all__ = ["CHROMIUM", "chromium", "dump_dom"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once with a fresh profile; fail with its stderr if it fails."""
    profile = tmp_path / f"chromium-profile-{uuid.uuid4().hex[:6]}"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def dump_dom(tmp_path: Path, page: str) -> str:
    """The DOM of ``page`` after its script has fetched and drawn (virtual time 7 s)."""
    return chromium(tmp_path, "--virtual-time-budget=7000", "--dump-dom", page).stdout
