"""The feedback-delay cohorts the window advisor reads: per served hour, how many predictions
were served and the delay histogram of one event type, from the counters kept as records arrive."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.advisor import Cohort
from service.store.stats import Stat, served_hour
from service.store.tables import delay_buckets, stat_counters

HOUR_S = 3600.0


async def delay_cohorts(conn: AsyncConnection, use_case: str, event_type: str, now: datetime) -> list[Cohort]:
    """One cohort per served hour that has ended by `now`, aged from its end."""
    served = await conn.execute(
        select(stat_counters.c.served_hour, func.sum(stat_counters.c.value))
        .where(stat_counters.c.use_case == use_case, stat_counters.c.name == Stat.SERVED)
        .group_by(stat_counters.c.served_hour)
    )
    histograms: dict[int, dict[int, int]] = defaultdict(dict)
    result = await conn.execute(
        select(delay_buckets.c.served_hour, delay_buckets.c.bucket, func.sum(delay_buckets.c.count))
        .where(delay_buckets.c.use_case == use_case, delay_buckets.c.event_type == event_type)
        .group_by(delay_buckets.c.served_hour, delay_buckets.c.bucket)
    )
    for hour, bucket, count in result:
        histograms[int(hour)][int(bucket)] = int(count)
    current = served_hour(now)
    elapsed_in_hour = (now - now.replace(minute=0, second=0, microsecond=0)).total_seconds()
    return [
        Cohort(
            served=int(total), age_s=(current - int(hour) - 1) * HOUR_S + elapsed_in_hour, events=histograms[int(hour)]
        )
        for hour, total in served
        if int(hour) < current and int(total) > 0
    ]
