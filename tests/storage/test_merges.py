"""merge_all: a unit of work's counters, maxima and quality rows added to the stored ones, in one
statement on PostgreSQL; the same totals on either dialect."""

from __future__ import annotations

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.stats import Merge, merge, merge_all
from service.store.tables import delay_max, quality_bins, stat_counters

BIN_KEY = ("recsys", "1h", 7, "ranker", "3", "final", 4)


def _unit(clicks: int, slowest_s: float, positives: int) -> list[Merge]:
    return [
        merge(stat_counters, {("recsys", "events", "click", 7): clicks, ("recsys", "served", "", 7): 0}, "add"),
        merge(delay_max, {("recsys", "click", 7): slowest_s}, "max"),
        merge(quality_bins, {BIN_KEY: (1, positives, 0.5 * positives)}, "add"),
    ]


def _statements(engine: AsyncEngine) -> list[str]:
    sent: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    return sent


async def test_units_add_up_and_keep_the_maximum(engine: AsyncEngine) -> None:
    sent = _statements(engine)
    async with engine.begin() as conn:
        await merge_all(conn, _unit(clicks=3, slowest_s=12.5, positives=2))
    async with engine.begin() as conn:
        await merge_all(conn, _unit(clicks=4, slowest_s=9.0, positives=-1))
    merges = len(sent)
    async with engine.begin() as conn:
        counters = (await conn.execute(select(stat_counters))).all()
        slowest = (await conn.execute(select(delay_max.c.max_s))).scalar_one()
        bins = (await conn.execute(select(quality_bins.c.negatives, quality_bins.c.positives))).one()
    # A zero adds nothing: no row for "served".
    assert [(r.name, r.event_type, r.served_hour, r.value) for r in counters] == [("events", "click", 7, 7)]
    assert slowest == 12.5
    assert tuple(bins) == (2, 1)
    # PostgreSQL: one statement per unit, every table in it; SQLite: one executemany per table.
    assert merges == (2 if engine.dialect.name == "postgresql" else 6)


async def test_nothing_to_merge_sends_nothing(engine: AsyncEngine) -> None:
    sent = _statements(engine)
    async with engine.begin() as conn:
        await merge_all(conn, [merge(stat_counters, {("recsys", "served", "", 7): 0}, "add")])
    assert sent == []
