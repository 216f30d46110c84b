"""Reading partitions in step by event time (Kafka Streams' timestamp synchronisation).

A backfill or a replay finds both topics full. Read as fetched, the events partitions run ahead of
the predictions partitions in event time, and every event read before its prediction is stored as
an orphan and joined again later (27% of the joiner's time on a preloaded benchmark). So a fetched
record is applied only once every partition that still has unread records in the broker has been
read up to the record's event time; the rest waits here, uncommitted, and only the partitions with
nothing waiting are fetched next, which bounds what waits. Live traffic, every partition read to
its end, is never held back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Hashable, Iterable
from datetime import UTC, datetime
from typing import Generic, TypeVar

Partition = TypeVar("Partition", bound=Hashable)
Item = TypeVar("Item")

NOT_READ = datetime.min.replace(tzinfo=UTC)  # how far a partition never fetched has been read


class InStep(Generic[Partition, Item]):
    """Fetched records waiting, per partition in offset order, until the others catch up."""

    def __init__(self) -> None:
        self._waiting: dict[Partition, deque[tuple[datetime | None, Item]]] = {}
        self._reached: dict[Partition, datetime] = {}

    def add(self, partition: Partition, fetched: Iterable[tuple[datetime | None, Item]]) -> None:
        """Records fetched from one partition with their event times; a record without one (it
        could not be decoded) never waits for another partition."""
        queue = self._waiting.setdefault(partition, deque())
        for time, item in fetched:
            queue.append((time, item))
            if time is not None and time > self._reached.get(partition, NOT_READ):
                self._reached[partition] = time

    def take(self, unread: Collection[Partition]) -> dict[Partition, list[Item]]:
        """What may be applied now. `unread`: the partitions with records in the broker beyond
        what was fetched. The horizon is the least event time they were read up to; from each
        partition, the records up to it, in offset order (offsets commit as a prefix)."""
        horizon = min((self._reached.get(p, NOT_READ) for p in unread), default=None)
        taken: dict[Partition, list[Item]] = {}
        for partition, queue in self._waiting.items():
            ready = []
            while queue:
                time = queue[0][0]
                if horizon is not None and time is not None and time > horizon:
                    break
                ready.append(queue.popleft()[1])
            if ready:
                taken[partition] = ready
        return taken

    def waiting(self, partition: Partition) -> int:
        return len(self._waiting.get(partition, ()))

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions handed over: their new owner reads them again from the committed offsets."""
        for partition in partitions:
            self._waiting.pop(partition, None)
            self._reached.pop(partition, None)
