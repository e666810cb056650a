"""Is Kafka / Redis answering?  A real metadata request and a real ``PING``.

``wait_for_kafka`` and ``wait_for_redis`` are what a service calls at start: they
poll until the dependency answers and raise :class:`DependencyUnavailableError`
(a retriable :class:`~driftline.contracts.errors.UnavailableError`) after the wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import redis
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from driftline.infra.errors import DependencyUnavailableError

__all__ = [
    "kafka_answers",
    "kafka_answers_async",
    "kafka_broker_count_async",
    "poll_until",
    "redis_answers",
    "wait_for_kafka",
    "wait_for_redis",
]

T = TypeVar("T")

POLL_INTERVAL_S = 0.25


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """Silence aiokafka's connection-refused errors while we poll on purpose."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


async def kafka_broker_count_async(bootstrap_servers: str, timeout_s: float = 2.0) -> int:
    """Brokers listed by one metadata request to ``bootstrap_servers``; 0 if it fails."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers,
        client_id="driftline-readiness",
        request_timeout_ms=max(100, int(timeout_s * 1000)),
        retry_backoff_ms=50,
    )
    try:
        with _quiet_aiokafka():
            await asyncio.wait_for(client.bootstrap(), timeout_s)
        return len(client.cluster.brokers())
    except (KafkaError, OSError, TimeoutError):
        return 0
    finally:
        with _quiet_aiokafka(), contextlib.suppress(Exception):
            await client.close()


async def kafka_answers_async(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """Whether a metadata request to ``bootstrap_servers`` succeeds and lists a broker."""
    return await kafka_broker_count_async(bootstrap_servers, timeout_s) > 0


def kafka_answers(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """Sync :func:`kafka_answers_async`."""
    return _run_sync(lambda: kafka_answers_async(bootstrap_servers, timeout_s))


def redis_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether ``PING`` to ``host:port`` returns ``PONG`` (a loading server does not count)."""
    client = redis.Redis(
        host=host, port=port, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def poll_until(
    check: Callable[[], bool],
    timeout_s: float,
    *,
    is_dead: Callable[[], bool] | None = None,
) -> bool:
    """Poll ``check`` until true (``True``), or ``is_dead`` / the deadline (``False``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if is_dead is not None and is_dead():
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


def wait_for_kafka(bootstrap_servers: str, timeout_s: float = 30.0) -> None:
    """Return once Kafka answers a metadata request; raise after ``timeout_s``.

    Raises :class:`DependencyUnavailableError` (retriable, gRPC ``UNAVAILABLE``).
    """
    if not poll_until(lambda: kafka_answers(bootstrap_servers), timeout_s):
        raise DependencyUnavailableError(
            f"Kafka at {bootstrap_servers} did not answer a metadata request within "
            f"{timeout_s:g}s. Start it with `driftline infra up`, or point "
            "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS at a running broker."
        )


def wait_for_redis(host: str, port: int, timeout_s: float = 15.0) -> None:
    """Return once Redis answers ``PING``; :class:`DependencyUnavailableError` after the wait."""
    if not poll_until(lambda: redis_answers(host, port), timeout_s):
        raise DependencyUnavailableError(
            f"Redis at {host}:{port} did not answer PING within {timeout_s:g}s. Start it "
            "with `driftline infra up`, or set DRIFTLINE_REDIS__HOST / DRIFTLINE_REDIS__PORT."
        )
