"""Group commit as pure asyncio: who shares a commit, who gets which outcome."""

from __future__ import annotations

import asyncio

import pytest

from service.api.group_commit import Bounds, GroupCommit, Overloaded


class Recorder:
    """A commit that records its groups; works named 'bad*' are refused alone, 'boom' fails all."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()  # a commit has started

    async def commit(self, works: list[str]) -> list[str | Exception]:
        self.groups.append(works)
        self.entered.set()
        await self.gate.wait()
        if "boom" in works:
            raise RuntimeError("commit failed")
        return [ValueError(w) if w.startswith("bad") else w.upper() for w in works]


async def _submit_while_held(recorder: Recorder, group: GroupCommit[str, str], works: list[str]) -> list[object]:
    """Submit works while the first commit is held open, so the rest queue behind it."""
    recorder.gate.clear()
    tasks = [asyncio.create_task(group.submit(w)) for w in works]
    await recorder.entered.wait()
    for _ in range(10):
        await asyncio.sleep(0)
    recorder.gate.set()
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_waiting_works_share_the_next_commit() -> None:
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(recorder.commit, size=lambda _: 1, bounds=Bounds(100, 10**9, 1e9))
    outcomes = await _submit_while_held(recorder, group, [f"w{i}" for i in range(20)])
    assert outcomes == [f"W{i}" for i in range(20)]
    assert recorder.groups == [["w0"], [f"w{i}" for i in range(1, 20)]]


async def test_a_refused_work_fails_alone() -> None:
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(recorder.commit, size=lambda _: 1, bounds=Bounds(100, 10**9, 1e9))
    outcomes = await _submit_while_held(recorder, group, ["a", "b", "bad", "c"])
    assert outcomes[:2] == ["A", "B"]
    assert isinstance(outcomes[2], ValueError)
    assert outcomes[3] == "C"


async def test_a_failed_commit_fails_every_work_of_its_group() -> None:
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(recorder.commit, size=lambda _: 1, bounds=Bounds(100, 10**9, 1e9))
    outcomes = await _submit_while_held(recorder, group, ["first", "a", "boom", "b"])
    assert outcomes[0] == "FIRST"  # committed alone, before the failing group
    assert all(isinstance(o, RuntimeError) for o in outcomes[1:]), outcomes
    assert recorder.groups[1] == ["a", "boom", "b"]


async def test_groups_are_bounded_by_size() -> None:
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(recorder.commit, size=len, bounds=Bounds(5, 10**9, 1e9))
    outcomes = await _submit_while_held(recorder, group, ["x", "aa", "bb", "cc", "dddddddd"])
    assert outcomes == ["X", "AA", "BB", "CC", "DDDDDDDD"]
    # A work larger than the bound still gets a group of its own.
    assert recorder.groups == [["x"], ["aa", "bb"], ["cc"], ["dddddddd"]]


async def test_a_cancelled_leader_does_not_abort_its_group() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    group: GroupCommit[str, str] = GroupCommit(recorder.commit, size=lambda _: 1, bounds=Bounds(100, 10**9, 1e9))
    leader = asyncio.create_task(group.submit("lead"))
    await recorder.entered.wait()
    leader.cancel()
    follower = asyncio.create_task(group.submit("next"))
    for _ in range(10):
        await asyncio.sleep(0)
    recorder.gate.set()
    assert await follower == "NEXT"
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert recorder.groups == [["lead"], ["next"]]  # the leader's commit ran to its end


async def test_work_cancelled_before_its_turn_is_not_committed() -> None:
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(recorder.commit, size=lambda _: 1, bounds=Bounds(100, 10**9, 1e9))
    recorder.gate.clear()
    first = asyncio.create_task(group.submit("first"))
    await recorder.entered.wait()
    gone = asyncio.create_task(group.submit("gone"))
    kept = asyncio.create_task(group.submit("kept"))
    for _ in range(10):
        await asyncio.sleep(0)
    gone.cancel()
    recorder.gate.set()
    assert await first == "FIRST"
    assert await kept == "KEPT"
    assert recorder.groups == [["first"], ["kept"]]


async def test_past_the_queued_size_new_works_are_shed_at_once() -> None:
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(recorder.commit, size=len, bounds=Bounds(100, 5, 1e9))
    outcomes = await _submit_while_held(recorder, group, ["first", "aa", "bbb", "c"])
    # "first" is committing (not queued); "aa" + "bbb" fill the 5 queued; "c" would pass it.
    assert outcomes[:3] == ["FIRST", "AA", "BBB"]
    assert isinstance(outcomes[3], Overloaded)
    assert "5 records are waiting" in str(outcomes[3])
    assert recorder.groups == [["first"], ["aa", "bbb"]]
    assert await group.submit("again") == "AGAIN"  # drained: admitted again


async def test_when_the_oldest_waits_too_long_new_works_are_shed() -> None:
    now = [0.0]
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(
        recorder.commit, size=lambda _: 1, bounds=Bounds(100, 10**9, 2.0), clock=lambda: now[0]
    )
    recorder.gate.clear()
    first = asyncio.create_task(group.submit("first"))
    await recorder.entered.wait()
    queued = asyncio.create_task(group.submit("queued"))
    await asyncio.sleep(0)
    now[0] = 1.9
    late = asyncio.create_task(group.submit("in time"))
    await asyncio.sleep(0)
    now[0] = 2.5
    with pytest.raises(Overloaded, match=r"waited 2\.5 s"):
        await group.submit("shed")
    recorder.gate.set()
    assert await asyncio.gather(first, queued, late) == ["FIRST", "QUEUED", "IN TIME"]
    assert ["shed"] not in recorder.groups


async def test_one_work_larger_than_the_queue_bound_passes_an_idle_queue() -> None:
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(recorder.commit, size=len, bounds=Bounds(100, 3, 1e9))
    assert await group.submit("larger") == "LARGER"


async def test_a_cancelled_waiting_work_leaves_the_bounds_at_once() -> None:
    now = [0.0]
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(
        recorder.commit, size=lambda _: 1, bounds=Bounds(100, 1, 2.0), clock=lambda: now[0]
    )
    recorder.gate.clear()
    first = asyncio.create_task(group.submit("first"))
    await recorder.entered.wait()
    waiting = asyncio.create_task(group.submit("cancelled"))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    now[0] = 10.0  # long after: a stale entry would look ten seconds old and fill the bound
    recorder.gate.set()
    assert await first == "FIRST"
    assert await group.submit("next") == "NEXT"
    assert recorder.groups == [["first"], ["next"]]
