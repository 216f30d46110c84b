"""Group commit: requests that arrive while a commit is under way wait, then share the next one.

One transaction and one fsync (embedded mode), or one lookup and one produce batch (Kafka mode),
serve every request of a group. Each request is answered only after that shared commit: with its
own outcome when the commit did its part, or with the commit's error, which every request of the
group then gets, so no request is told its data is durable when it is not.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from service.config import Settings

Work = TypeVar("Work")
Outcome = TypeVar("Outcome")

# commit(works) -> one outcome per work, in order: its result, or the exception that refused it
# alone. An exception raised by commit itself fails the whole group.
Commit = Callable[[list[Work]], Awaitable[list[Outcome | Exception]]]


class Overloaded(Exception):
    """Refused before it was queued: the work already waiting passed a bound. Nothing was stored."""


@dataclass(frozen=True)
class Bounds:
    max_size: int  # a group takes works up to this total size (at least one)
    max_queued: int  # total size of the works waiting for a group
    max_delay: float  # seconds the oldest waiting work may have waited


def group_bounds(settings: Settings) -> Bounds:
    return Bounds(settings.max_batch, settings.max_queued_records, settings.max_queue_delay.total_seconds())


class GroupCommit(Generic[Work, Outcome]):
    """Under overload it sheds: a work arriving while the queue passes its bounds is refused at once
    (Overloaded) instead of waiting longer and longer."""

    def __init__(
        self,
        commit: Commit[Work, Outcome],
        size: Callable[[Work], int],
        bounds: Bounds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._commit = commit
        self._size = size
        self._bounds = bounds
        self._clock = clock
        self._queue: deque[tuple[Work, asyncio.Future[Outcome], float]] = deque()
        self._queued = 0
        self._turn = asyncio.Lock()

    def _admit(self, size: int) -> None:
        if not self._queue:
            return  # an idle queue takes anything: one work larger than the bound must still pass
        waited = self._clock() - self._queue[0][2]
        if waited > self._bounds.max_delay:
            raise Overloaded(f"the oldest waiting request has waited {waited:.1f} s")
        if self._queued + size > self._bounds.max_queued:
            raise Overloaded(f"{self._queued} records are waiting")

    async def submit(self, work: Work) -> Outcome:
        size = self._size(work)
        self._admit(size)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future, self._clock()))
        self._queued += size
        try:
            async with self._turn:
                if not future.done():
                    group = self._take()
                    if group:
                        # Shielded: a leader whose request is cancelled must not abort the others' commit.
                        await asyncio.shield(self._run(group))
            # Our work may be in a group that a cancelled leader left running: wait for it.
            return await future
        except asyncio.CancelledError:
            future.cancel()  # still queued: never committed; already in a group: its outcome unread
            self._forget(future, size)
            raise

    def _forget(self, future: asyncio.Future[Outcome], size: int) -> None:
        """A cancelled work still queued leaves the queue now: it must not hold its place in the
        bounds (nor, at the head, look older and older to every later request)."""
        for entry in self._queue:
            if entry[1] is future:
                self._queue.remove(entry)
                self._queued -= size
                return

    def _take(self) -> list[tuple[Work, asyncio.Future[Outcome]]]:
        group: list[tuple[Work, asyncio.Future[Outcome]]] = []
        total = 0
        while self._queue:
            work, future, _ = self._queue[0]
            size = self._size(work)
            if group and total + size > self._bounds.max_size:
                break
            self._queue.popleft()
            self._queued -= size
            if future.done():  # its request was cancelled before its turn: nothing to store
                continue
            group.append((work, future))
            total += size
        return group

    async def _run(self, group: list[tuple[Work, asyncio.Future[Outcome]]]) -> None:
        try:
            outcomes = await self._commit([work for work, _ in group])
        except Exception as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): nobody is told anything was stored
            for _, future in group:
                future.cancel()
            raise
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
