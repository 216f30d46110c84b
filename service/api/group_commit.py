"""Group commit: requests that arrive while a commit is under way wait, then share the next one.

One transaction and one fsync (embedded mode), or one lookup and one produce batch (Kafka mode),
serve every request of a group. Each request is answered only after that shared commit: with its
own outcome when the commit did its part, or with the commit's error, which every request of the
group then gets, so no request is told its data is durable when it is not.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Work = TypeVar("Work")
Outcome = TypeVar("Outcome")

# commit(works) -> one outcome per work, in order: its result, or the exception that refused it
# alone. An exception raised by commit itself fails the whole group.
Commit = Callable[[list[Work]], Awaitable[list[Outcome | Exception]]]


class GroupCommit(Generic[Work, Outcome]):
    def __init__(self, commit: Commit[Work, Outcome], size: Callable[[Work], int], max_size: int) -> None:
        self._commit = commit
        self._size = size
        self._max_size = max_size  # a group takes works up to this total size (at least one)
        self._queue: deque[tuple[Work, asyncio.Future[Outcome]]] = deque()
        self._turn = asyncio.Lock()

    async def submit(self, work: Work) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        try:
            async with self._turn:
                if not future.done():
                    group = self._take()
                    if group:
                        # Shielded: a leader whose request is cancelled must not abort the others' commit.
                        await asyncio.shield(self._run(group))
        except asyncio.CancelledError:
            future.cancel()  # still queued: never committed; already in a group: its outcome unread
            raise
        # Our work may be in a group that a cancelled leader left running: wait for it.
        return await future

    def _take(self) -> list[tuple[Work, asyncio.Future[Outcome]]]:
        group: list[tuple[Work, asyncio.Future[Outcome]]] = []
        total = 0
        while self._queue:
            work, future = self._queue[0]
            size = self._size(work)
            if group and total + size > self._max_size:
                break
            self._queue.popleft()
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
