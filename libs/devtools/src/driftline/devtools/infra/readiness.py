"""Is a local component answering?  A real metadata request, ``PING`` or HTTP ``GET``.

What the local-platform launcher polls while its broker and Redis start. Services
wait for their dependencies with ``driftline.kafkaio.wait_for_kafka`` and
``driftline.runtime.wait_for_redis`` instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import redis
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.errors import KafkaError

from driftline.security.kafka_auth import KafkaAuth, kafka_client_options
from driftline.security.redis_auth import RedisAuth

__all__ = [
    "coordinators_ready",
    "http_answers",
    "kafka_answers",
    "kafka_broker_count",
    "poll_until",
    "redis_answers",
    "redis_cluster_ok",
]

T = TypeVar("T")

POLL_INTERVAL_S = 0.25


COORDINATOR_PROBE_ID = "driftline-readiness"
"""The transactional id and group :func:`coordinators_ready` asks about."""


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


async def _broker_count(
    bootstrap_servers: str, timeout_s: float, security: KafkaAuth | None
) -> int:
    """Brokers listed by one metadata request to ``bootstrap_servers``; 0 if it fails."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers,
        client_id="driftline-readiness",
        request_timeout_ms=max(100, int(timeout_s * 1000)),
        retry_backoff_ms=50,
        **kafka_client_options(security),
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


async def _coordinators_answer(
    bootstrap_servers: str, timeout_s: float, security: KafkaAuth | None
) -> bool:
    """Whether a transactional producer gets its producer id (``InitProducerId``), and
    then a group's coordinator is found, before ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id="driftline-readiness",
        transactional_id=COORDINATOR_PROBE_ID,
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
        **kafka_client_options(security),
    )
    try:
        with _quiet_aiokafka():
            await asyncio.wait_for(producer.start(), timeout_s)
            while True:
                try:
                    await producer.client.coordinator_lookup(
                        CoordinationType.GROUP, COORDINATOR_PROBE_ID
                    )
                    return True
                except KafkaError:  # not available while __consumer_offsets is created
                    if loop.time() > deadline:
                        return False
                    await asyncio.sleep(POLL_INTERVAL_S)
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        with _quiet_aiokafka(), contextlib.suppress(Exception):
            await producer.stop()


def coordinators_ready(
    bootstrap_servers: str, timeout_s: float = 30.0, *, security: KafkaAuth | None = None
) -> bool:
    """Whether the broker's transaction and group coordinators answer.

    A transactional producer starts (``InitProducerId``), which it can only once
    ``__transaction_state`` exists and the partition holding :data:`COORDINATOR_PROBE_ID`
    is loaded; then ``FindCoordinator`` for a group succeeds, which it does once
    ``__consumer_offsets`` exists. A broker creates each topic when it is first asked
    (a busy machine takes seconds over it, while group heartbeats and transactional
    writes wait), so the local platform asks once at start-up, before any service does.
    """
    return _run_sync(lambda: _coordinators_answer(bootstrap_servers, timeout_s, security))


def kafka_broker_count(
    bootstrap_servers: str, timeout_s: float = 2.0, *, security: KafkaAuth | None = None
) -> int:
    """How many brokers one metadata request to ``bootstrap_servers`` lists (0 when it
    fails): a fenced or dead broker is not listed, so a cluster is whole when it says all."""
    return _run_sync(lambda: _broker_count(bootstrap_servers, timeout_s, security))


def kafka_answers(
    bootstrap_servers: str, timeout_s: float = 2.0, *, security: KafkaAuth | None = None
) -> bool:
    """Whether a metadata request to ``bootstrap_servers`` succeeds and lists a broker.

    In secure mode (``security``: e.g. admin's identity) the request goes over SASL_SSL,
    so it answers only once TLS, the SCRAM login and the request all work.
    """
    return _run_sync(lambda: _broker_count(bootstrap_servers, timeout_s, security)) > 0


def redis_answers(
    host: str, port: int, timeout_s: float = 1.0, *, auth: RedisAuth | None = None
) -> bool:
    """Whether ``PING`` to ``host:port`` returns ``PONG`` (a loading server does not count).

    ``auth``: a secure server's TLS and login (:func:`driftline.security.redis_auth.
    redis_auth`, the ``admin`` identity for ops); a refused one counts as not answering.
    """
    secure = {} if auth is None else auth.redis_kwargs()
    client = redis.Redis(
        host=host, port=port, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, **secure
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def redis_cluster_ok(
    host: str, port: int, timeout_s: float = 1.0, *, auth: RedisAuth | None = None
) -> bool:
    """Whether the Redis Cluster node at ``host:port`` answers ``CLUSTER INFO`` with
    ``cluster_state:ok`` (every slot served by a reachable master, as this node sees it).

    A node that answers ``PING`` is not enough: until the cluster is created, and while
    a dead master's replica is not yet promoted, it refuses commands on keys
    (``CLUSTERDOWN``). ``auth`` as for :func:`redis_answers`.
    """
    secure = {} if auth is None else auth.redis_kwargs()
    client = redis.Redis(
        host=host, port=port, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, **secure
    )
    try:
        info = client.cluster("INFO")  # parsed by redis-py into a dict
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
    return isinstance(info, dict) and info.get("cluster_state") == "ok"


def http_answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether ``GET url`` answers 200 (``/-/ready`` of Prometheus and Alertmanager, …)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


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
