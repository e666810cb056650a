"""Building Jaeger from the Go module proxy, once per version, into a cache outside the repo.

Jaeger is a Go program: ``go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@vX``
in a scratch module under the cache fetches it and its dependencies at the
versions Jaeger's own ``go.mod`` pins, and ``go build`` compiles it (about six
CPU-minutes the first time; Go's build cache makes a rebuild quick). Like the
Kafka jars (:mod:`driftline.devtools.infra.jars`), the binary is built into a
temporary name and renamed into place, and a marker file is written last, so an
interrupted build is simply redone.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from driftline.devtools.infra.errors import InfraError, MissingToolError
from driftline.devtools.infra.jars import COMPLETE_MARKER, Progress, _exclusive, _stderr
from driftline.devtools.infra.tools import INSTALL_HINTS, require_tool
from driftline.settings import PlatformSettings

__all__ = [
    "JAEGER_PACKAGE",
    "MIN_GO",
    "cached_go_build",
    "ensure_jaeger",
    "fetch_jaeger",
    "go_version",
    "jaeger_binary",
]

JAEGER_PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
"""The Go package of Jaeger's single binary (v2: an OpenTelemetry Collector distribution)."""

MIN_GO = (1, 24)
"""``go get -tool`` needs Go 1.24 (a newer toolchain Jaeger asks for is fetched by Go)."""

HEARTBEAT_S = 30.0
"""How often a progress line is printed while Go works."""


def jaeger_binary(cache: Path, version: str) -> Path:
    """``<cache>/<version>/jaeger``."""
    return cache.expanduser() / version / "jaeger"


def go_version(go_path: str) -> tuple[int, int]:
    """``(major, minor)`` of the Go toolchain at ``go_path`` (``go env GOVERSION``)."""
    out = subprocess.run(
        [go_path, "env", "GOVERSION"], capture_output=True, text=True, check=False, timeout=60
    )
    found = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if out.returncode != 0 or found is None:
        raise InfraError(f"`{go_path} env GOVERSION` failed: {(out.stdout + out.stderr).strip()}")
    return int(found.group(1)), int(found.group(2))


def fetch_jaeger(
    version: str,
    cache: Path,
    *,
    go: str = "go",
    progress: Progress = _stderr,
) -> Path:
    """Return the Jaeger ``version`` binary, building it with Go first if it is not there."""
    binary = jaeger_binary(cache, version)
    return cached_go_build(
        binary,
        go=go,
        min_go=MIN_GO,
        needs=f"building Jaeger needs {INSTALL_HINTS['go']}",
        build=lambda go_path: _build(version, binary.parent, go_path, progress),
    )


def cached_go_build(
    binary: Path,
    *,
    go: str,
    min_go: tuple[int, int],
    needs: str,
    build: Callable[[str], Path],
) -> Path:
    """``binary`` if a complete build of it is cached, else ``build(go_path)``'s, once.

    The Go toolchain must be ``min_go`` or newer (``needs`` says what for and how to get
    it); two processes never build at once (the second finds the first's binary).
    """
    version_dir = binary.parent
    if (version_dir / COMPLETE_MARKER).is_file() and binary.is_file():
        return binary
    go_path = require_tool(go, setting="DRIFTLINE_INFRA__OPS__GO")
    found = go_version(go_path)
    if found < min_go:
        raise MissingToolError(f"{go_path} is Go {found[0]}.{found[1]}; {needs}")
    with _exclusive(version_dir / ".lock"):  # two processes never build at once
        if (version_dir / COMPLETE_MARKER).is_file() and binary.is_file():
            return binary
        return build(go_path)


def _build(version: str, version_dir: Path, go_path: str, progress: Progress) -> Path:
    binary = version_dir / "jaeger"
    module = version_dir / "module"
    module.mkdir(parents=True, exist_ok=True)
    log = version_dir / "build.log"
    log.write_text("", encoding="utf-8")
    # -mod=mod: the scratch module's go.sum is filled in as needed; GOWORK=off: a go.work
    # above the cache (there should be none) must not pull other modules in.
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOWORK": "off"}
    started = time.monotonic()
    progress(f"building Jaeger {version} with Go (once; about 6 CPU-minutes)…")
    if not (module / "go.mod").is_file():
        _run_go([go_path, "mod", "init", "driftline.local/jaeger-build"], module, env, log)
    _run_go(
        [go_path, "get", "-tool", f"{JAEGER_PACKAGE}@v{version}"],
        module,
        env,
        log,
        progress=progress,
        doing=f"fetching Jaeger {version} modules",
        unit="modules",
    )
    partial = version_dir / "jaeger.partial"
    _run_go(
        [go_path, "build", "-v", "-o", str(partial), JAEGER_PACKAGE],
        module,
        env,
        log,
        progress=progress,
        doing=f"compiling Jaeger {version}",
        unit="packages compiled",
    )
    partial.replace(binary)
    (version_dir / COMPLETE_MARKER).write_text(f"jaeger {version}\n", encoding="utf-8")
    progress(f"Jaeger {version}: {binary} ({time.monotonic() - started:.0f}s)")
    return binary


def _count_lines(path: Path, since: int) -> int:
    """Lines in ``path`` after byte ``since``."""
    with path.open("rb") as handle:
        handle.seek(since)
        return handle.read().count(b"\n")


def _run_go(
    cmd: Sequence[str],
    cwd: Path,
    env: dict[str, str],
    log: Path,
    *,
    progress: Progress | None = None,
    doing: str = "",
    unit: str = "lines",
    what: str = "Jaeger",
    hint: str = "infra.ops.jaeger_version",
) -> None:
    """Run one ``go`` command with its output appended to ``log``; a line every 30 s.

    ``what`` names the program being built and ``hint`` the setting its version comes
    from, for the message of a failure (Helm's build uses it too).

    ``go get`` prints a line per module it adds and ``go build -v`` one per
    package it compiles, so the count says how far it got. Interrupted (Ctrl-C),
    the command is killed; failed, :class:`InfraError` carries the tail of ``log``.
    """
    with log.open("ab") as out:
        start = out.seek(0, os.SEEK_END)
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    began = time.monotonic()
    next_beat = began + HEARTBEAT_S
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            if progress is not None and time.monotonic() >= next_beat:
                count = _count_lines(log, start)
                elapsed = time.monotonic() - began
                progress(f"{doing}… {elapsed:.0f}s, {max(0, count - 1)} {unit} so far")
                next_beat += HEARTBEAT_S
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        text = log.read_bytes()[start:].decode("utf-8", errors="replace")
        tail = "\n".join(text.strip().splitlines()[-30:])
        raise InfraError(
            f"building {what} failed (exit {proc.returncode}); check network access to the "
            f"Go module proxy and {hint}. Full output: {log}\n{tail}"
        )


def ensure_jaeger(settings: PlatformSettings, *, progress: Progress = _stderr) -> Path:
    """The binary of ``settings.infra.ops.jaeger_version``, built into ``jaeger_cache`` once."""
    ops = settings.infra.ops
    return fetch_jaeger(ops.jaeger_version, ops.jaeger_cache, go=ops.go, progress=progress)
