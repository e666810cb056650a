"""What a consumer tells ops about records it cannot take: skips and stalls.

Two ways a stream consumer can fail a record, and what each must leave behind:

* **one record is at fault** (it cannot be parsed, names something that does not
  exist, makes a learner raise): the consumer skips it (or dead-letters it) and
  moves on; :meth:`ConsumerHealth.skip` logs the record's place and the reason
  and counts it in ``driftline_records_skipped_total{topic, reason}``;
* **the world is at fault** (broker or Redis down, registry unreachable): the
  consumer retries the same records with a back-off; :meth:`ConsumerHealth.failed`
  notes each failed attempt and, once one partition has failed at the same offset
  for ``stall_after_s``, says so once at ERROR with the offset and the error,
  and sets ``driftline_consumer_stalled{topic, partition}`` to 1 (the
  ``ConsumerStalled`` alert); :meth:`ConsumerHealth.progressed` clears it.

>>> from prometheus_client import CollectorRegistry
>>> clock = iter([0.0, 30.0, 61.0, 62.0]).__next__
>>> h = ConsumerHealth(CollectorRegistry(), stall_after_s=60, clock=clock)
>>> h.failed({("driftline.events", 2): 41}, "broker down")
>>> h.failed({("driftline.events", 2): 41}, "broker down")
>>> h.stalled()
[]
>>> h.failed({("driftline.events", 2): 41}, "broker down")
>>> h.stalled()
[('driftline.events', 2, 41)]
>>> h.progressed([("driftline.events", 2)])
>>> h.stalled()
[]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from driftline.telemetry.metrics import Children

__all__ = ["ConsumerHealth", "Partition"]

log = logging.getLogger(__name__)

Partition = tuple[str, int]
"""``(topic, partition)``."""


@dataclass
class _Failing:
    offset: int
    since: float
    attempts: int = 0
    reported: bool = False


class ConsumerHealth:
    """Skipped records and stalled partitions of one service's consumers."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        stall_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._skipped = Children(
            Counter(
                "driftline_records_skipped",
                "Records a consumer passed over because of the record itself (dead-lettered, "
                "or skipped on an internal topic), by topic and reason",
                ["topic", "reason"],
                registry=registry,
            )
        )
        self._stalled = Children(
            Gauge(
                "driftline_consumer_stalled",
                "1 while a partition has failed at the same offset for longer than "
                "kafka.stall_after_s",
                ["topic", "partition"],
                registry=registry,
            )
        )
        self._stall_seconds = Children(
            Gauge(
                "driftline_consumer_stall_seconds",
                "How long a partition has been failing at the same offset (0 when it moves)",
                ["topic", "partition"],
                registry=registry,
            )
        )
        self._failing: dict[Partition, _Failing] = {}
        self._seen: set[Partition] = set()

    def expect(self, reasons: Mapping[str, Iterable[str]]) -> None:
        """Create ``driftline_records_skipped_total{topic, reason}`` at 0 for each topic's
        reasons (``{topic: reasons}``): the services call it at start with every reason
        they can skip a record of that topic for.

        ``increase()`` cannot see a counter's first sample, so a series born at its first
        skip would hide that skip from the ``RecordsSkipped`` alert; a series scraped at 0
        first makes the first skip an increase.

        >>> from prometheus_client import CollectorRegistry, generate_latest
        >>> registry = CollectorRegistry()
        >>> ConsumerHealth(registry, stall_after_s=60).expect({"t": ["unreadable"]})
        >>> text = generate_latest(registry).decode()
        >>> 'records_skipped_total{reason="unreadable",topic="t"} 0.0' in text
        True
        """
        for topic, topic_reasons in reasons.items():
            for reason in topic_reasons:
                self._skipped(topic, reason)

    # -- one record at fault ------------------------------------------------------

    def skip(
        self,
        topic: str,
        partition: int | None,
        offset: int | None,
        reason: str,
        detail: str,
        *,
        event_id: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Count and log one record passed over because of itself.

        ``error`` is an unexpected exception the record raised (a bug it exercises,
        not one of the known refusals): its traceback is logged at ERROR first, so
        the skip says which line failed.
        """
        self._skipped(topic, reason).inc()
        where = f"{topic}[{partition}]@{offset}" if partition is not None else topic
        event = f" (event {event_id})" if event_id else ""
        if error is not None:
            log.error("applying the record at %s%s raised", where, event, exc_info=error)
        log.warning("skipped the record at %s%s: %s: %s", where, event, reason, detail)

    def skipped(self, topic: str, reason: str) -> float:
        """How many records of ``topic`` were skipped for ``reason`` (for tests and views)."""
        return float(self._skipped(topic, reason)._value.get())

    # -- the world at fault ---------------------------------------------------------

    def failed(self, positions: Mapping[Partition, int], error: object) -> None:
        """One more failed attempt at the records from ``positions`` (partition → first offset)."""
        now = self._clock()
        for part, offset in positions.items():
            state = self._failing.get(part)
            if state is None or state.offset != offset:
                state = self._failing[part] = _Failing(offset, now)
            state.attempts += 1
            waited = now - state.since
            topic, partition = part
            self._stall_seconds(topic, str(partition)).set(waited)
            if waited >= self.stall_after_s and not state.reported:
                state.reported = True
                self._stalled(topic, str(partition)).set(1)
                log.error(
                    "consumer stalled: %s[%d] has failed at offset %d for %.0fs (%d attempts): "
                    "%s; nothing after it on this partition is processed until it succeeds",
                    topic,
                    partition,
                    offset,
                    waited,
                    state.attempts,
                    error,
                )

    def progressed(self, partitions: Iterable[Partition]) -> None:
        """The records of ``partitions`` went through: any stall there is over."""
        now = self._clock()
        for part in partitions:
            if part not in self._seen:
                # The stall gauges of a partition exist at 0 from its first success, so
                # the ConsumerStalled alert watches a series that is there, not absent.
                self._seen.add(part)
                self._stalled(part[0], str(part[1]))
                self._stall_seconds(part[0], str(part[1]))
            state = self._failing.pop(part, None)
            if state is None:
                continue
            topic, partition = part
            self._stall_seconds(topic, str(partition)).set(0)
            if state.reported:
                self._stalled(topic, str(partition)).set(0)
                log.warning(
                    "consumer resumed: %s[%d] moved past offset %d after %.0fs",
                    topic,
                    partition,
                    state.offset,
                    now - state.since,
                )

    def stalled(self) -> list[tuple[str, int, int]]:
        """``(topic, partition, offset)`` of every partition reported stalled."""
        return sorted((t, p, s.offset) for (t, p), s in self._failing.items() if s.reported)
