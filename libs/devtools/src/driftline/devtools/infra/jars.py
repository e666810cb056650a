"""Fetching the Kafka broker jars with Maven, once per version, into a cache outside the repo."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from driftline.devtools.infra.errors import InfraError
from driftline.devtools.infra.layout import find_infra_dir
from driftline.devtools.infra.tools import require_tool
from driftline.settings import PlatformSettings

__all__ = ["COMPLETE_MARKER", "Progress", "ensure_kafka_jars", "fetch_kafka_jars", "kafka_libs_dir"]

COMPLETE_MARKER = ".complete"
"""File written in ``<jar_cache>/<version>/`` once every jar is in place."""

Progress = Callable[[str], None]
"""Receives one human-readable line of progress."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def kafka_libs_dir(jar_cache: Path, version: str) -> Path:
    """``<jar_cache>/<version>/libs``: the broker's classpath directory."""
    return jar_cache.expanduser() / version / "libs"


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_kafka_jars(
    version: str,
    jar_cache: Path,
    pom: Path,
    *,
    progress: Progress = _stderr,
    mvn: str = "mvn",
) -> Path:
    """Return the libs dir of Kafka ``version``, running Maven first if it is not complete.

    Maven copies into a temporary directory next to the cache entry, which is
    renamed into place only after Maven succeeded, and the marker file is the
    last thing written: an interrupted fetch is simply retried.
    """
    version_dir = jar_cache.expanduser() / version
    libs = version_dir / "libs"
    if (version_dir / COMPLETE_MARKER).is_file() and libs.is_dir():
        return libs
    mvn_path = require_tool(mvn)
    if not pom.is_file():
        raise InfraError(f"{pom} not found: the Kafka pom is needed to fetch the jars")
    with _exclusive(version_dir / ".lock"):  # two processes never fetch at once
        if (version_dir / COMPLETE_MARKER).is_file() and libs.is_dir():
            return libs
        return _run_maven(version, version_dir, pom, mvn_path, progress)


def _run_maven(
    version: str, version_dir: Path, pom: Path, mvn_path: str, progress: Progress
) -> Path:
    libs = version_dir / "libs"
    progress(f"fetching Kafka {version} jars with Maven (once)…")
    started = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=".libs-", dir=version_dir))
    try:
        cmd = [
            mvn_path,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            f"-Dkafka.version={version}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            tail = "\n".join(output[-30:])
            raise InfraError(
                f"Maven could not fetch Kafka {version} (exit {result.returncode}); "
                f"check the version (infra.kafka_version) and network access to "
                f"Maven Central.\n$ {' '.join(cmd)}\n{tail}"
            )
        if not any(staging.glob("kafka_2.13-*.jar")):
            raise InfraError(f"Maven finished but no kafka_2.13 jar landed in {staging}")
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    (version_dir / COMPLETE_MARKER).write_text(f"kafka {version}\n", encoding="utf-8")
    count = sum(1 for _ in libs.glob("*.jar"))
    progress(f"Kafka {version}: {count} jars in {libs} ({time.monotonic() - started:.1f}s)")
    return libs


def ensure_kafka_jars(
    settings: PlatformSettings,
    *,
    infra_dir: Path | None = None,
    progress: Progress = _stderr,
) -> Path:
    """The libs dir of ``settings.infra.kafka_version``, fetched into ``infra.jar_cache`` once."""
    pom = find_infra_dir(infra_dir) / "kafka" / "pom.xml"
    return fetch_kafka_jars(
        settings.infra.kafka_version, settings.infra.jar_cache, pom, progress=progress
    )
