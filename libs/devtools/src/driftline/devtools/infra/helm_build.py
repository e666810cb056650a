"""Building Helm from the Go module proxy, once per version, into a cache outside the repo.

The chart in ``infra/helm/driftline`` is proven by ``helm lint`` and ``helm template``
in the tests, so the tests need a Helm binary, and the package registries reached
here serve Helm only as a Go module. ``go install helm.sh/helm/v4/cmd/helm@vX`` with
``GOBIN`` pointing into the cache fetches it at the versions Helm's own ``go.mod``
pins and compiles it (about three CPU-minutes the first time; Go's build cache makes
a rebuild quick). As for Jaeger (:mod:`driftline.devtools.infra.jaeger_build`, whose
``go`` runner this reuses), the binary is installed under a temporary directory and
renamed into place, and a marker file is written last, so an interrupted build is
simply redone. ``driftline infra fetch`` (run by ``make install``) builds it, so a
test run never waits for Go.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from driftline.devtools.infra.jaeger_build import _run_go, cached_go_build
from driftline.devtools.infra.jars import COMPLETE_MARKER, Progress, _stderr
from driftline.settings import PlatformSettings

__all__ = [
    "HELM_CACHE",
    "HELM_PACKAGE",
    "HELM_VERSION",
    "MIN_GO_FOR_HELM",
    "ensure_helm",
    "fetch_helm",
    "helm_binary",
]

HELM_PACKAGE = "helm.sh/helm/v4/cmd/helm"
"""The Go package of the ``helm`` command."""

HELM_VERSION = "4.3.2"
"""The Helm version the chart is linted and rendered with."""

HELM_CACHE = Path("~/.cache/driftline/helm")
"""Where Helm is built and kept, outside the repo (``<cache>/<version>/helm``)."""

_VERSION_VAR = "helm.sh/helm/v4/internal/version.version"

MIN_GO_FOR_HELM = (1, 21)
"""``go install pkg@version`` fetches the newer toolchain Helm's ``go.mod`` asks for from
Go 1.21 on."""


def helm_binary(cache: Path = HELM_CACHE, version: str = HELM_VERSION) -> Path:
    """``<cache>/<version>/helm``."""
    return cache.expanduser() / version / "helm"


def fetch_helm(
    version: str = HELM_VERSION,
    cache: Path = HELM_CACHE,
    *,
    go: str = "go",
    progress: Progress = _stderr,
) -> Path:
    """Return the Helm ``version`` binary, building it with Go first if it is not there."""
    binary = helm_binary(cache, version)
    need = ".".join(map(str, MIN_GO_FOR_HELM))
    return cached_go_build(
        binary,
        go=go,
        min_go=MIN_GO_FOR_HELM,
        needs=f"building Helm needs Go {need} or newer: `sudo apt-get install golang-go` "
        "(macOS: `brew install go`)",
        build=lambda go_path: _build(version, binary.parent, go_path, progress),
    )


def _build(version: str, version_dir: Path, go_path: str, progress: Progress) -> Path:
    binary = version_dir / "helm"
    partial = version_dir / "bin.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log = version_dir / "build.log"
    log.write_text("", encoding="utf-8")
    # GOWORK=off and no GOFLAGS: a workspace or a -mod flag of the caller's must not
    # change what `go install pkg@version` resolves (Helm's own go.mod decides).
    env = {**os.environ, "GOBIN": str(partial), "GOWORK": "off", "GOFLAGS": ""}
    started = time.monotonic()
    progress(f"building Helm {version} with Go (once; about 3 CPU-minutes)…")
    _run_go(
        # The version Helm reports (`helm version`) is set at link time, as Helm's Makefile does.
        [
            go_path,
            "install",
            "-v",
            f"-ldflags=-X {_VERSION_VAR}=v{version}",
            f"{HELM_PACKAGE}@v{version}",
        ],
        version_dir,
        env,
        log,
        progress=progress,
        doing=f"building Helm {version}",
        unit="packages compiled",
        what="Helm",
        hint=f"the Helm version ({HELM_PACKAGE}@v{version})",
    )
    (partial / "helm").replace(binary)
    shutil.rmtree(partial, ignore_errors=True)
    (version_dir / COMPLETE_MARKER).write_text(f"helm {version}\n", encoding="utf-8")
    progress(f"Helm {version}: {binary} ({time.monotonic() - started:.0f}s)")
    return binary


def ensure_helm(settings: PlatformSettings, *, progress: Progress = _stderr) -> Path:
    """The Helm binary of :data:`HELM_VERSION`, built into :data:`HELM_CACHE` once with
    ``infra.ops.go``."""
    return fetch_helm(go=settings.infra.ops.go, progress=progress)
