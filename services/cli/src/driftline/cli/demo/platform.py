"""The platform under the demo: start the part that is not running, stop only that.

Kafka, Redis, the ops stack (unless left out) and each of the six services are
used as they are when they run (or answer) already; what the demo starts is
recorded in :class:`Started` so that :func:`stop_started` stops exactly that
(services first, in reverse order).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from driftline.cli.context import progress
from driftline.cli.supervisor import SERVICE_NAMES, ServiceProcess
from driftline.devtools.infra import (
    InfraError,
    LocalComponent,
    LocalPlatform,
    OpsStack,
    dashboard_links_env,
    provision_platform_topics,
    trace_export_env,
)
from driftline.settings import PlatformSettings

__all__ = ["Started", "ensure_platform", "stop_started"]


@dataclass
class Started:
    """What the demo started (and so must stop)."""

    infra: list[LocalComponent] = field(default_factory=list)
    services: list[ServiceProcess] = field(default_factory=list)
    ops: OpsStack | None = None
    """The ops stack the demo runs with (started by it or not); ``None`` when left out."""


def ensure_platform(
    settings: PlatformSettings,
    config: Path | None,
    env: dict[str, str],
    timeout_s: float,
    say: Callable[[str], None],
    ops: bool | None = None,
) -> Started:
    """Start Kafka, Redis, the ops stack and every service not already running or answering.

    ``ops`` (default ``infra.ops.enabled``) includes the ops stack; services the
    demo starts then export traces to its Jaeger unless an OTLP endpoint is set.
    """
    started = Started()
    platform = LocalPlatform(settings, progress=progress, ops=ops)
    written = platform.prepare_credentials()
    if written is not None and written.created:
        say(f"secure mode: wrote the local CA and credentials to {written.root}")
    try:
        for component in platform.components:
            pid = component.running_pid()
            if pid is not None or component.answering():
                say(f"{component.name}: using the one running on {component.address}")
                continue
            outcome = component.start(timeout_s=settings.infra.ready_timeout_s)
            started.infra.append(component)
            say(outcome.describe())
        provision_platform_topics(settings)
        if platform.ops_enabled:
            started.ops = platform.ops
            traces = trace_export_env(settings, platform.ops.jaeger)
            if traces:
                say(f"services the demo starts export traces to {platform.ops.jaeger.url}")
            env = {**env, **traces, **dashboard_links_env(settings, platform.ops)}
        for key, value in env.items():
            os.environ.setdefault(key, value)
        waiting: list[ServiceProcess] = []
        for name in SERVICE_NAMES:
            svc = ServiceProcess(name, settings, config)
            if svc.running_pid() is not None or svc.healthy():
                say(f"{name}: using the one running ({svc.health_url.removesuffix('/healthz')})")
                continue
            if not svc.built:
                raise InfraError(f"service {name} is not built; the demo needs all six")
            svc.start()
            started.services.append(svc)
            waiting.append(svc)
        for svc in waiting:
            seconds = svc.wait_healthy(timeout_s)
            say(f"{svc.name}: started (pid {svc.running_pid()}), healthy in {seconds:.1f}s")
    except BaseException:
        stop_started(started, say)
        raise
    return started


def stop_started(started: Started, say: Callable[[str], None]) -> None:
    """Stop what the demo started, services first, in reverse order."""
    for svc in reversed(started.services):
        say(svc.stop().describe())
    for component in reversed(started.infra):
        say(component.stop().describe())
