"""What every service process shares: the admin HTTP app and the process lifecycle."""

from driftline.runtime.admin import Health, build_admin_app, serve_admin, serve_http
from driftline.runtime.lifecycle import (
    LATENCY_GC_THRESHOLDS,
    run_service,
    service_main,
    wait_for_redis,
)

__all__ = [
    "LATENCY_GC_THRESHOLDS",
    "Health",
    "build_admin_app",
    "run_service",
    "serve_admin",
    "serve_http",
    "service_main",
    "wait_for_redis",
]
