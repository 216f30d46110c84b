"""The feedback-loop figures and the gauges read from the store: from the counters and delay histograms
kept as records arrive, never from a scan of events."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.histogram import quantile
from service.core.policy import LabelKind
from service.store.stats import Stat, served_hour
from service.store.tables import dead_letters as dead_letter_table
from service.store.tables import delay_buckets, delay_buckets_daily, delay_max, stat_counters


async def feedback_loop(
    conn: AsyncConnection, use_case: str | None, since: datetime | None, known_use_cases: list[str]
) -> dict[str, Any]:
    """Figures per use case and event type, over predictions served since `since` (to the hour)."""
    hour_from = served_hour(since) if since is not None else None

    def scoped(
        query: Select[Any],
        table: Table,
        start: int | None = hour_from,
        end: int | None = None,
        period: str = "served_hour",
    ) -> Select[Any]:
        """The rows of `use_case` (all if None) whose period is in [start, end)."""
        if use_case is not None:
            query = query.where(table.c.use_case == use_case)
        if start is not None:
            query = query.where(table.c[period] >= start)
        if end is not None:
            query = query.where(table.c[period] < end)
        return query

    counters: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    result = await conn.execute(
        scoped(
            select(
                stat_counters.c.use_case,
                stat_counters.c.name,
                stat_counters.c.event_type,
                func.sum(stat_counters.c.value),
            ).group_by(stat_counters.c.use_case, stat_counters.c.name, stat_counters.c.event_type),
            stat_counters,
        )
    )
    for uc, name, event_type, total in result:
        counters[uc][(name, event_type)] += int(total)
    buckets: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    # Whole days from the daily histograms; the hours of a `since` before its first whole day
    # from the hourly ones.
    first_day = None if hour_from is None else -(-hour_from // 24)  # the first day starting at or after it
    parts: list[tuple[Table, int | None, int | None, str]] = [(delay_buckets_daily, first_day, None, "served_day")]
    if hour_from is not None and first_day is not None and hour_from < first_day * 24:
        parts.append((delay_buckets, hour_from, first_day * 24, "served_hour"))
    for table, start, end, period in parts:
        query = select(table.c.use_case, table.c.event_type, table.c.bucket, func.sum(table.c.count)).group_by(
            table.c.use_case, table.c.event_type, table.c.bucket
        )
        for uc, event_type, bucket, count in await conn.execute(scoped(query, table, start, end, period)):
            buckets[(uc, event_type)][bucket] += int(count)
    result = await conn.execute(
        scoped(
            select(delay_max.c.use_case, delay_max.c.event_type, func.max(delay_max.c.max_s)).group_by(
                delay_max.c.use_case, delay_max.c.event_type
            ),
            delay_max,
        )
    )
    maxima = {(uc, event_type): float(m) for uc, event_type, m in result}

    names = [use_case] if use_case is not None else known_use_cases
    report: dict[str, Any] = {}
    for uc in names:
        c = counters.get(uc, {})

        def total(name: Stat, c: dict[tuple[str, str], int] = c) -> int:
            return sum(v for (n, _), v in c.items() if n == name)

        def per_type(name: Stat, c: dict[tuple[str, str], int] = c) -> dict[str, int]:
            return {t: v for (n, t), v in c.items() if n == name and v}

        served = total(Stat.SERVED)
        labels_by_kind = {kind.value: total(Stat.labels(kind)) for kind in LabelKind}
        labeled = sum(labels_by_kind.values())
        delays = {}
        for (bucket_uc, event_type), counts in sorted(buckets.items()):
            if bucket_uc != uc:
                continue
            max_s = maxima.get((uc, event_type), 0.0)
            delays[event_type] = {
                "count": sum(counts.values()),
                "p50_s": quantile(counts, 0.50, max_s),
                "p90_s": quantile(counts, 0.90, max_s),
                "p99_s": quantile(counts, 0.99, max_s),
                "max_s": max_s,
            }
        report[uc] = {
            "served": served,
            "labeled": labeled,
            "coverage": labeled / served if served else None,
            "pending": served - total(Stat.FINALIZED),
            "labels_by_kind": labels_by_kind,
            "feedback_delay": delays,
            "events": per_type(Stat.EVENTS),
            "late_events": total(Stat.TOO_LATE),
            "late_events_by_type": per_type(Stat.TOO_LATE),
            "revisions": total(Stat.REVISIONS),
            "label_changes": total(Stat.LABEL_CHANGES),
            "clock_skew": total(Stat.CLOCK_SKEW),
            "clock_skew_by_type": per_type(Stat.CLOCK_SKEW),
            "expired": total(Stat.EXPIRED),
            "invalid_events": total(Stat.INVALID_EVENTS),
        }
    unscoped = counters.get("", {})
    return {
        "use_cases": report,
        "orphans_expired": sum(v for (n, _), v in unscoped.items() if n == Stat.ORPHANS_EXPIRED),
        "dead_letters": await dead_letters(conn),
    }


async def dead_letters(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(dead_letter_table))).scalar_one())


async def pending_by_use_case(conn: AsyncConnection) -> dict[str, int]:
    result = await conn.execute(
        select(stat_counters.c.use_case, stat_counters.c.name, func.sum(stat_counters.c.value))
        .where(stat_counters.c.name.in_((Stat.SERVED, Stat.FINALIZED)))
        .group_by(stat_counters.c.use_case, stat_counters.c.name)
    )
    pending: dict[str, int] = defaultdict(int)
    for uc, name, total in result:
        pending[uc] += int(total) if name == Stat.SERVED else -int(total)
    return {uc: n for uc, n in pending.items() if uc}
