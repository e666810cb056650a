"""``/healthz``, ``/readyz`` and ``/metrics`` for every service (FastAPI), served by
:func:`serve_http`: plain HTTP, or HTTPS only in secure mode
(:mod:`driftline.security.http_tls`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from driftline.security import http_tls
from driftline.settings import PlatformSettings, SecuritySettings
from driftline.telemetry import ServiceMetrics


@dataclass
class Health:
    """Readiness as a set of named conditions; ready when every one holds.

    >>> h = Health("serving")
    >>> h.set("model_loaded", False); h.ready
    False
    >>> h.set("model_loaded", True); h.ready
    True
    """

    service: str
    conditions: dict[str, bool] = field(default_factory=dict)

    def set(self, name: str, ok: bool) -> None:
        """Record whether condition ``name`` holds."""
        self.conditions[name] = ok

    @property
    def ready(self) -> bool:
        """True when every registered condition holds (and at least one is registered)."""
        return bool(self.conditions) and all(self.conditions.values())


_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


def build_admin_app(
    health: Health, metrics: ServiceMetrics, *, title: str | None = None
) -> FastAPI:
    """The admin app; a service may add routes of its own (ingestion's API does)."""
    app = FastAPI(
        title=title or f"driftline {health.service}",
        version="0.1.0",
        # Probes and scrapes every few seconds would each start a trace of their own.
        telemetry={"exclude": lambda scope: scope.get("path") in _UNTRACED},
    )

    @app.get("/healthz", tags=["admin"], summary="Liveness: the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": health.service}

    @app.get("/readyz", tags=["admin"], summary="Readiness, with each condition")
    async def readyz() -> JSONResponse:
        metrics.ready.set(1 if health.ready else 0)
        body = {"ready": health.ready, "service": health.service, "conditions": health.conditions}
        return JSONResponse(body, status_code=200 if health.ready else 503)

    @app.get("/metrics", tags=["admin"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        metrics.ready.set(1 if health.ready else 0)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the service's own handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_admin(
    app: FastAPI, settings: PlatformSettings, service: str, stop: asyncio.Event
) -> None:
    """:func:`serve_http` of ``service``'s admin endpoint: its ``<service>.admin`` host and
    port, and in secure mode its own certificate (the identity is the service's name)."""
    admin = getattr(settings, service).admin
    await serve_http(
        app, admin.host, admin.port, stop, security=settings.security, identity=service
    )


async def serve_http(
    app: FastAPI,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    security: SecuritySettings | None,
    identity: str,
) -> None:
    """Serve ``app`` until ``stop`` is set; the process's own signal handling stays in charge.

    ``security`` and ``identity`` (the service's name) are required so that no service
    can start its admin port without saying how: in secure mode it serves HTTPS only,
    with ``identity``'s certificate (:func:`driftline.security.http_tls.server_options`).
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        **http_tls.server_options(security, identity),
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()  # surface a bind failure
        return
    server.should_exit = True
    await task
