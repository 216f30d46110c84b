"""The feedback-delay cohorts the window advisor reads: per served hour, how many predictions
were served and the delay histogram of one event type, from the counters kept as records arrive."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.advisor import Cohort
from service.store.stats import Stat, served_hour
from service.store.tables import delay_buckets, stat_counters

HOUR_S = 3600.0


async def delay_cohorts(
    conn: AsyncConnection, use_case: str, event_types: Sequence[str], now: datetime
) -> dict[str, list[Cohort]]:
    """Per event type, one cohort per served hour that has ended by `now`, aged from its end; the
    served counts read once for every type."""
    served = await conn.execute(
        select(stat_counters.c.served_hour, func.sum(stat_counters.c.value))
        .where(stat_counters.c.use_case == use_case, stat_counters.c.name == Stat.SERVED)
        .group_by(stat_counters.c.served_hour)
    )
    current = served_hour(now)
    elapsed_in_hour = (now - now.replace(minute=0, second=0, microsecond=0)).total_seconds()
    ages = {
        int(hour): (int(total), (current - int(hour) - 1) * HOUR_S + elapsed_in_hour)
        for hour, total in served
        if int(hour) < current and int(total) > 0
    }
    histograms: dict[tuple[str, int], dict[int, int]] = defaultdict(dict)
    # One row per (use case, type, hour, bucket), its primary key: nothing to add up.
    result = await conn.execute(
        select(
            delay_buckets.c.event_type, delay_buckets.c.served_hour, delay_buckets.c.bucket, delay_buckets.c.count
        ).where(delay_buckets.c.use_case == use_case, delay_buckets.c.event_type.in_(event_types))
    )
    for event_type, hour, bucket, count in result:
        histograms[(event_type, int(hour))][int(bucket)] = int(count)
    return {
        event_type: [
            Cohort(served=total, age_s=age, events=histograms[(event_type, hour)])
            for hour, (total, age) in ages.items()
        ]
        for event_type in event_types
    }
