"""Concurrent reads of the same online features, coalesced into fewer reads of the store.

Reads of the same feature names of one feature set go out at once while fewer
than ``max_in_flight`` such reads are outstanding; beyond that they queue and
go out together, as one read (at most ``max_coalesced`` entities, with the
earliest of their deadlines), as soon as a read returns. So a lone request
waits for nothing, and under load the per-read cost of the client, the channel
and the feature store is shared by many requests. Each caller gets its own rows
back, or the read's error.

The transport is a function (:data:`Read`); :class:`ReadCoalescer` knows nothing
of gRPC. The caller's trace context is taken when it reads and handed to the
transport, so the feature store's span joins the prediction's trace (a coalesced
read carries the first caller's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate

from driftline.contracts.errors import DeadlineExceededError
from driftline.serving.feature_source import OnlineValue

__all__ = ["Read", "ReadCoalescer", "TraceContext", "mark_retrieved", "trace_context"]

TraceContext = tuple[tuple[str, str], ...] | None
"""A read's W3C trace context (``traceparent``, ``tracestate``); None outside a trace."""

Rows = list[dict[str, OnlineValue]]

Read = Callable[[str, Sequence[str], Sequence[str], float, TraceContext], Awaitable[Rows]]
"""One read of the store: feature set, entity ids, feature names, timeout in seconds and
trace context -> one row (feature name -> value read) per entity id, in order."""

_Key = tuple[str, tuple[str, ...]]


@dataclass(slots=True)
class _Coalesced:
    """Reads of one (feature set, feature names) that go out as one call."""

    entity_ids: list[str]
    deadline: float
    """Loop time by which the earliest caller needs its answer."""
    trace: TraceContext
    result: asyncio.Future[Rows]
    started: bool = False


class ReadCoalescer:
    """Reads through ``read``, coalescing concurrent ones (see the module doc).

    ``target`` names the store in errors.
    """

    def __init__(
        self,
        read: Read,
        target: str = "",
        *,
        max_in_flight: int = 1,
        max_coalesced: int = 1000,
    ) -> None:
        self._call = read
        self._target = target
        self._max_in_flight = max_in_flight
        self._max_coalesced = max_coalesced
        self._open: dict[_Key, _Coalesced] = {}
        """Per key, the batch still taking reads (not yet sent)."""
        self._in_flight: dict[_Key, int] = {}

    async def read(
        self,
        featureset: str,
        entity_ids: Sequence[str],
        feature_names: Sequence[str],
        timeout_s: float,
    ) -> Rows:
        """One row per entity id (in order), read alone or with concurrent reads."""
        key = (featureset, tuple(feature_names))
        batch = self._open.get(key)
        if batch is None and self._in_flight.get(key, 0) < self._max_in_flight:
            # Nothing to join and room for a call: send it from this task, without
            # the batch, task and shield a coalesced read needs (~25 µs saved).
            return await self._direct(key, entity_ids, timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if batch is None or len(batch.entity_ids) + len(entity_ids) > self._max_coalesced:
            if batch is not None and not batch.started:
                self._start(key, batch)  # full: send it even though calls are outstanding
            batch = _Coalesced([], deadline, trace_context(), loop.create_future())
            self._open[key] = batch
            if self._in_flight.get(key, 0) < self._max_in_flight:
                self._start(key, batch)
        first = len(batch.entity_ids)
        batch.entity_ids.extend(entity_ids)
        if deadline < batch.deadline:
            batch.deadline = deadline
        # Shielded: one caller giving up (its RPC cancelled) must not cancel the read
        # the others wait for.
        rows = await asyncio.shield(batch.result)
        return rows[first : first + len(entity_ids)]

    async def _direct(self, key: _Key, entity_ids: Sequence[str], timeout_s: float) -> Rows:
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            return await self._call(key[0], entity_ids, key[1], timeout_s, trace_context())
        finally:
            self._done(key)

    def _done(self, key: _Key) -> None:
        """A call for ``key`` returned: send the reads that queued behind it."""
        self._in_flight[key] -= 1
        queued = self._open.get(key)
        if queued is not None and not queued.started:
            self._start(key, queued)

    def _start(self, key: _Key, batch: _Coalesced) -> None:
        batch.started = True
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        task = asyncio.ensure_future(self._send(key, batch))
        task.add_done_callback(mark_retrieved)

    async def _send(self, key: _Key, batch: _Coalesced) -> None:
        # Reads made before this task first runs (the same loop pass) still join.
        if self._open.get(key) is batch:
            del self._open[key]
        try:
            timeout_s = batch.deadline - asyncio.get_running_loop().time()
            if timeout_s <= 0:
                raise DeadlineExceededError(
                    f"no time was left to read features from {self._target} "
                    "(the feature store is answering slower than requests arrive)"
                )
            rows = await self._call(key[0], batch.entity_ids, key[1], timeout_s, batch.trace)
        except asyncio.CancelledError:
            batch.result.cancel()
            raise
        except Exception as exc:
            # Not swallowed: every caller of this read raises it.
            batch.result.set_exception(exc)
            # Every caller may have given up already: mark the error as seen so that
            # asyncio does not also report it as never retrieved.
            batch.result.exception()
        else:
            batch.result.set_result(rows)
        finally:
            self._done(key)


def trace_context() -> TraceContext:
    """The current trace context as call metadata (``traceparent``), None outside a trace."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items()) or None


def mark_retrieved(task: asyncio.Task[Any]) -> None:
    """Done callback of a background task whose failure is handled elsewhere (or is of no
    interest): marks it seen, so that asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
