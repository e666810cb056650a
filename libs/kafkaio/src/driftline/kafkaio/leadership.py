"""One active replica among several, chosen by a Kafka consumer group.

Every replica of a one-writer service (training, monitoring) joins one consumer group on a
topic with one partition; the member holding that partition is the active replica, the
others are standbys.  The group hands the partition to another member only once its holder
has left or stopped answering (its session timed out), so a standby takes over from a dead
or paused active replica by itself.

The group's assignor is :meth:`Leadership.assignor`: each member tells the group the
*epoch* of the role it holds (0 for a standby), and the partition goes to the member with
the highest.  The epoch is the writer's fence, set by the service once it is active (the
registry's claim of a writer role for training, the transactional producer's epoch for
monitoring): a standby joining leaves the role where it is, and a paused replica coming
back — it still believes it holds epoch *n* — does not take it back from the one that
fenced it with *n + 1* meanwhile.  Without a holder, the lowest member id gets it.
(aiokafka's sticky assignor was tried first: it handed the partition back to the resumed
replica, logging "assigned to multiple consumers following sticky assignment generation -1".)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Literal

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

__all__ = ["Leadership", "assign_to_holder", "first_done", "work_while_held"]


class Leadership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Whether this replica is the active one: it holds a partition of ``topic``.

    Pass it as the ``listener`` of the election consumer's ``subscribe`` and
    :meth:`assignor` as its ``partition_assignment_strategy``.  :attr:`held` is set while
    the partition is assigned here; :attr:`lost` once it was held and a later assignment
    left it out.  Every rebalance first revokes all partitions (the classic, eager
    protocol), so a revocation alone means nothing: the assignment that follows says
    whether the partition stayed.  With ``pause``, the partition is paused as soon as it is
    assigned (a consumer that only elects reads nothing).
    """

    def __init__(self, topic: str, *, consumer: Any = None) -> None:
        self.topic = topic
        self.consumer = consumer
        """Set to the election consumer to pause what it is assigned (it then reads nothing)."""
        self.held = asyncio.Event()
        self.lost = asyncio.Event()
        self.epoch = 0
        """The fence epoch of the role this replica holds (set by the service once active)."""

    def assignor(self) -> type[AbstractPartitionAssignor]:
        """The group's partition assignor, speaking for this member (see the module)."""
        leadership = self

        class HolderKeepsTheRole(AbstractPartitionAssignor):  # type: ignore[misc]
            name = "driftline-writer-epoch"
            version = 0

            @classmethod
            def metadata(cls, topics: Any) -> ConsumerProtocolMemberMetadata:
                # A holder whose fence is not set up yet still outranks a standby.
                epoch = max(leadership.epoch, 1) if leadership.held.is_set() else 0
                return ConsumerProtocolMemberMetadata(
                    cls.version, sorted(topics), str(epoch).encode("ascii")
                )

            @classmethod
            def assign(
                cls, cluster: ClusterMetadata, members: Mapping[str, Any]
            ) -> dict[str, ConsumerProtocolMemberAssignment]:
                return {
                    member: ConsumerProtocolMemberAssignment(cls.version, topics, b"")
                    for member, topics in assign_to_holder(cluster, members).items()
                }

            @classmethod
            def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
                return None

        return HolderKeepsTheRole

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        mine = [tp for tp in assigned if tp.topic == self.topic]
        if mine and self.consumer is not None:
            self.consumer.pause(*mine)
        if mine:
            self.held.set()
        elif self.held.is_set():
            self.held.clear()
            self.lost.set()


def _epoch_of(metadata: Any) -> int:
    try:
        return int(bytes(metadata.user_data or b"0").decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return 0  # a member that says nothing readable holds nothing


def assign_to_holder(
    cluster: ClusterMetadata, members: Mapping[str, Any]
) -> dict[str, list[tuple[str, list[int]]]]:
    """Every partition of the members' topics to the member naming the highest epoch in its
    metadata (ties and no holder: the lowest member id); the others get none.

    >>> class M:
    ...     def __init__(self, epoch): self.user_data, self.subscription = epoch, ["t"]
    >>> class C:
    ...     def partitions_for_topic(self, topic): return {0}
    >>> assign_to_holder(C(), {"m-1": M(b"1"), "m-2": M(b"2"), "m-0": M(b"0")})
    {'m-1': [], 'm-2': [('t', [0])], 'm-0': []}
    >>> assign_to_holder(C(), {"m-b": M(b"0"), "m-a": M(b"")})
    {'m-b': [], 'm-a': [('t', [0])]}
    """
    chosen = min(members, key=lambda m: (-_epoch_of(members[m]), m))
    topics = sorted({t for meta in members.values() for t in meta.subscription})
    owned = [(t, sorted(cluster.partitions_for_topic(t) or ())) for t in topics]
    return {m: (owned if m == chosen else []) for m in members}


async def first_done(*aws: Any) -> None:
    """Wait until the first of ``aws`` (awaitables or tasks) is done; cancel the others it
    created (a task passed in is left alone)."""
    tasks = [a if isinstance(a, asyncio.Task) else asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task, given in zip(tasks, aws, strict=True):
            if task is not given:
                task.cancel()


async def work_while_held(
    leadership: Leadership,
    stop: asyncio.Event,
    work: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    *,
    deposed: asyncio.Event,
    active: Callable[[float], None],
    claim: Callable[[], Awaitable[bool]] | None = None,
) -> Literal["deposed", "lost"] | None:
    """Wait until this replica holds the role, then run ``work(its_stop)`` until ``stop``,
    the role moving elsewhere (``"lost"``) or the fence refusing a write (``deposed`` set:
    ``"deposed"``); ``None`` when ``stop`` ended it.

    ``claim`` (training's registry claim) runs once the role is held and must return True
    before the work starts; ``active`` is told 1 while the work runs, 0 after (a gauge's
    ``set``).  ``work``'s own failure is re-raised.
    """
    await first_done(leadership.held.wait(), stop.wait())
    if stop.is_set() or (claim is not None and not await claim()):
        return None
    active(1)
    work_stop = asyncio.Event()
    task = asyncio.create_task(work(work_stop), name="active-work")
    try:
        await first_done(stop.wait(), leadership.lost.wait(), deposed.wait(), task)
    finally:
        work_stop.set()
        await task
        active(0)
    if stop.is_set():
        return None
    return "deposed" if deposed.is_set() else "lost"
