"""The feedback-loop figures and the gauges read from the store: from the counters and delay histograms
kept as records arrive, never from a scan of events. The dashboard's extra reads live here too: the
histograms and their trend by served hour or day, figures per model (from the predictions, the one
table with a model), and the pipeline's state (watermark, Kafka partitions, dead letters)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, Table, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.histogram import quantile, upper_bound
from service.core.model import LabelStatus, Phase
from service.core.policy import LabelKind
from service.core.windows import PartitionProgress, combined_watermark, effective_watermark, partition_watermark
from service.store import watermarks
from service.store.ingest import EMBEDDED_WATERMARK
from service.store.stats import Stat, hour_start, served_hour
from service.store.tables import dead_letters as dead_letter_table
from service.store.tables import delay_buckets, delay_buckets_daily, delay_max, predictions, stat_counters

Granularity = Literal["hour", "day"]
HOURS_PER_DAY = 24
MAX_HOURLY_TREND = 31 * HOURS_PER_DAY  # hours an hourly trend may span
RECENT_DEAD_LETTERS = 20

_HOUR = timedelta(hours=1)
Part = tuple[Table, int | None, int | None, str]  # a histogram table, the periods [start, end), its period column
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Served:
    """Predictions of `use_case` (all if None) served in the hours [hour_from, hour_to) (open if None)."""

    use_case: str | None = None
    hour_from: int | None = None
    hour_to: int | None = None

    @classmethod
    def between(cls, use_case: str | None, since: datetime | None, until: datetime | None) -> Served:
        """Whole hours: `since` from its hour on, `until` up to the end of its hour (unless on the hour)."""
        hour_to = None
        if until is not None:
            hour_to = served_hour(until)
            if _EPOCH + hour_to * _HOUR < until:
                hour_to += 1
        return cls(use_case, served_hour(since) if since is not None else None, hour_to)

    @property
    def hours(self) -> int | None:
        if self.hour_from is None or self.hour_to is None:
            return None
        return max(0, self.hour_to - self.hour_from)

    def where(
        self, query: Select[Any], table: Table, start: int | None, end: int | None, period: str = "served_hour"
    ) -> Select[Any]:
        """The rows of the use case whose period is in [start, end)."""
        if self.use_case is not None:
            query = query.where(table.c.use_case == self.use_case)
        if start is not None:
            query = query.where(table.c[period] >= start)
        if end is not None:
            query = query.where(table.c[period] < end)
        return query

    def hourly(self, query: Select[Any], table: Table) -> Select[Any]:
        return self.where(query, table, self.hour_from, self.hour_to)

    def parts(self) -> list[Part]:
        """Where the histograms of these hours are: whole days in the daily table, the hours of a
        partial first or last day in the hourly one. (table, start, end, period column)"""
        first_day = None if self.hour_from is None else -(-self.hour_from // HOURS_PER_DAY)
        end_day = None if self.hour_to is None else self.hour_to // HOURS_PER_DAY
        if first_day is not None and end_day is not None and end_day <= first_day:
            return [(delay_buckets, self.hour_from, self.hour_to, "served_hour")]  # within one day
        parts: list[tuple[Table, int | None, int | None, str]] = [
            (delay_buckets_daily, first_day, end_day, "served_day")
        ]
        if self.hour_from is not None and first_day is not None and self.hour_from < first_day * HOURS_PER_DAY:
            parts.append((delay_buckets, self.hour_from, first_day * HOURS_PER_DAY, "served_hour"))
        if self.hour_to is not None and end_day is not None and end_day * HOURS_PER_DAY < self.hour_to:
            parts.append((delay_buckets, end_day * HOURS_PER_DAY, self.hour_to, "served_hour"))
        return parts


async def feedback_loop(
    conn: AsyncConnection,
    use_case: str | None,
    since: datetime | None,
    known_use_cases: list[str],
    until: datetime | None = None,
    trend: Granularity | None = None,
) -> dict[str, Any]:
    """Figures per use case and event type, over predictions served from `since` to `until` (to
    the hour). With `trend`, also each event type's delay histogram and the figures per served
    hour or day."""
    served = Served.between(use_case, since, until)

    counters: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    result = await conn.execute(
        served.hourly(
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
    for table, start, end, period in served.parts():
        query = select(table.c.use_case, table.c.event_type, table.c.bucket, func.sum(table.c.count)).group_by(
            table.c.use_case, table.c.event_type, table.c.bucket
        )
        for uc, event_type, bucket, count in await conn.execute(served.where(query, table, start, end, period)):
            buckets[(uc, event_type)][bucket] += int(count)
    result = await conn.execute(
        served.hourly(
            select(delay_max.c.use_case, delay_max.c.event_type, func.max(delay_max.c.max_s)).group_by(
                delay_max.c.use_case, delay_max.c.event_type
            ),
            delay_max,
        )
    )
    maxima = {(uc, event_type): float(m) for uc, event_type, m in result}
    trends = await _trend(conn, served, trend) if trend is not None else {}

    names = [use_case] if use_case is not None else known_use_cases
    report: dict[str, Any] = {}
    for uc in names:
        c = counters.get(uc, {})
        delays = {}
        for (bucket_uc, event_type), counts in sorted(buckets.items()):
            if bucket_uc != uc:
                continue
            delays[event_type] = _delays(counts, maxima.get((uc, event_type), 0.0))
            if trend is not None:
                delays[event_type]["histogram"] = histogram(counts)
        report[uc] = _figures(c) | {"feedback_delay": delays}
        if trend is not None:
            report[uc]["trend"] = trends.get(uc, [])
    unscoped = counters.get("", {})
    answer: dict[str, Any] = {
        "use_cases": report,
        "orphans_expired": sum(v for (n, _), v in unscoped.items() if n == Stat.ORPHANS_EXPIRED),
        "dead_letters": await dead_letters(conn),
    }
    if trend is not None:
        answer["served_hours"] = {
            "from": None if served.hour_from is None else hour_start(served.hour_from).isoformat(),
            "to": None if served.hour_to is None else hour_start(served.hour_to).isoformat(),
        }
        answer["trend_granularity"] = trend
    return answer


def _delays(counts: Mapping[int, int], max_s: float) -> dict[str, Any]:
    return {
        "count": sum(counts.values()),
        "p50_s": quantile(counts, 0.50, max_s),
        "p90_s": quantile(counts, 0.90, max_s),
        "p99_s": quantile(counts, 0.99, max_s),
        "max_s": max_s,
    }


def histogram(counts: Mapping[int, int]) -> list[dict[str, float | int]]:
    """The non-empty buckets in order: each holds the delays above the previous bound up to `le_s`."""
    return [{"le_s": upper_bound(b), "count": counts[b]} for b in sorted(counts) if counts[b]]


def _figures(c: Mapping[tuple[str, str], int]) -> dict[str, Any]:
    """The counter figures of one use case (or one period of it)."""

    def total(name: Stat) -> int:
        return sum(v for (n, _), v in c.items() if n == name)

    def per_type(name: Stat) -> dict[str, int]:
        return {t: v for (n, t), v in c.items() if n == name and v}

    served = total(Stat.SERVED)
    labels_by_kind = {kind.value: total(Stat.labels(kind)) for kind in LabelKind}
    labeled = sum(labels_by_kind.values())
    return {
        "served": served,
        "labeled": labeled,
        "coverage": labeled / served if served else None,
        "pending": served - total(Stat.FINALIZED),
        "labels_by_kind": labels_by_kind,
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


class RangeTooLong(ValueError):
    pass


async def _trend(conn: AsyncConnection, served: Served, granularity: Granularity) -> dict[str, list[dict[str, Any]]]:
    """Per use case, the figures and delay quantiles of each served hour or day that has any."""
    per = 1 if granularity == "hour" else HOURS_PER_DAY
    if granularity == "hour" and (served.hours is None or served.hours > MAX_HOURLY_TREND):
        raise RangeTooLong(f"an hourly trend spans at most {MAX_HOURLY_TREND} hours: give since and until")
    counters: dict[tuple[str, int], dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    counter_query = select(
        stat_counters.c.use_case,
        stat_counters.c.served_hour,
        stat_counters.c.name,
        stat_counters.c.event_type,
        stat_counters.c.value,
    )
    for uc, hour, name, event_type, value in await conn.execute(served.hourly(counter_query, stat_counters)):
        counters[(uc, hour // per)][(name, event_type)] += int(value)
    buckets: dict[tuple[str, int, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    parts = (
        served.parts() if granularity == "day" else [(delay_buckets, served.hour_from, served.hour_to, "served_hour")]
    )
    for table, start, end, period in parts:
        query = select(table.c.use_case, table.c[period], table.c.event_type, table.c.bucket, table.c.count)
        to_period = per if (period == "served_hour") else 1
        for uc, at, event_type, bucket, count in await conn.execute(served.where(query, table, start, end, period)):
            buckets[(uc, at // to_period, event_type)][bucket] += int(count)
    maxima: dict[tuple[str, int, str], float] = {}
    maxima_query = select(delay_max.c.use_case, delay_max.c.served_hour, delay_max.c.event_type, delay_max.c.max_s)
    for uc, hour, event_type, max_s in await conn.execute(served.hourly(maxima_query, delay_max)):
        key = (uc, hour // per, event_type)
        maxima[key] = max(float(max_s), maxima.get(key, 0.0))

    periods = {key for key in counters} | {(uc, at) for uc, at, _ in buckets}
    trends: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for uc, at in sorted(periods):
        figures = _figures(counters.get((uc, at), {}))
        delays = {
            event_type: _delays(counts, maxima.get((uc, at, event_type), 0.0))
            for (b_uc, b_at, event_type), counts in sorted(buckets.items())
            if (b_uc, b_at) == (uc, at)
        }
        trends[uc].append({"start": hour_start(at * per).isoformat(), **figures, "feedback_delay": delays})
    return trends


async def by_model(
    conn: AsyncConnection, served: Served, model: str | None, model_version: str | None
) -> dict[str, Any]:
    """Served, current labels by kind, coverage and pending per model and version, counted from the
    predictions themselves: the counters and histograms have no model dimension. Erased and purged
    predictions are not counted here (the counters keep them), and there are no per-model delay
    histograms, late events or revisions."""
    status_final = predictions.c.phase == Phase.FINAL.value
    query = (
        select(
            predictions.c.use_case,
            predictions.c.model,
            predictions.c.model_version,
            predictions.c.label_kind,
            func.count(),
            func.sum(case((status_final, 1), else_=0)),
        )
        .where(predictions.c.label_status.is_distinct_from(LabelStatus.ERASED.value))
        .group_by(predictions.c.use_case, predictions.c.model, predictions.c.model_version, predictions.c.label_kind)
    )
    if served.use_case is not None:
        query = query.where(predictions.c.use_case == served.use_case)
    if served.hour_from is not None:
        query = query.where(predictions.c.served_at >= hour_start(served.hour_from))
    if served.hour_to is not None:
        query = query.where(predictions.c.served_at < hour_start(served.hour_to))
    if model is not None:
        query = query.where(predictions.c.model == model)
    if model_version is not None:
        query = query.where(predictions.c.model_version == model_version)
    rows: dict[tuple[str, str | None, str | None], dict[str, Any]] = {}
    for uc, m, version, kind, count, final in await conn.execute(query):
        row = rows.setdefault(
            (uc, m, version),
            {"served": 0, "final": 0, "labels_by_kind": {k.value: 0 for k in LabelKind}},
        )
        row["served"] += int(count)
        row["final"] += int(final or 0)
        if kind in row["labels_by_kind"]:
            row["labels_by_kind"][kind] += int(count)
    models: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (uc, m, version), row in sorted(rows.items(), key=lambda item: tuple(str(k) for k in item[0])):
        labeled = sum(row["labels_by_kind"].values())
        models[uc].append(
            {
                "model": m,
                "model_version": version,
                "served": row["served"],
                "labeled": labeled,
                "coverage": labeled / row["served"] if row["served"] else None,
                "pending": row["served"] - row["final"],
                "labels_by_kind": row["labels_by_kind"],
            }
        )
    return {
        "use_cases": dict(models),
        "source": "predictions",
        "per_model": ["served", "labeled", "coverage", "pending", "labels_by_kind"],
    }


@dataclass(frozen=True, slots=True)
class WatermarkTimes:
    disorder: timedelta
    idle_timeout: timedelta
    owner_timeout: timedelta


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _lag(now: datetime, t: datetime | None) -> float | None:
    return None if t is None else (now - t).total_seconds()


def _marks(
    stored: Mapping[str, PartitionProgress], now: datetime, times: WatermarkTimes, kafka_topics: Iterable[str] | None
) -> tuple[datetime | None, dict[str, datetime | None]]:
    """The watermark, and in Kafka mode each partition's (by name) that it is the lowest of."""
    if kafka_topics is None:
        progress = stored.get(EMBEDDED_WATERMARK, watermarks.NOTHING_REPORTED)
        return effective_watermark(progress.state, now, times.disorder, times.idle_timeout), {}
    topics = set(kafka_topics)
    marks = {
        name: partition_watermark(p, now, times.disorder, times.idle_timeout, times.owner_timeout)
        for name, p in sorted(stored.items())
        if name.rsplit(":", 1)[0] in topics
    }
    return combined_watermark(list(marks.values())), marks


async def current_watermark(
    conn: AsyncConnection, now: datetime, times: WatermarkTimes, kafka_topics: Iterable[str] | None
) -> datetime | None:
    """The time up to which every event is taken to have arrived, as the writers would judge it now."""
    return _marks(await watermarks.load_all(conn), now, times, kafka_topics)[0]


async def pipeline(
    conn: AsyncConnection, now: datetime, times: WatermarkTimes, kafka_topics: Iterable[str] | None
) -> dict[str, Any]:
    """The watermark and its lag behind the wall clock; in Kafka mode each partition's (how far its
    event time lags, whether its consumer had read to its end) and the dead letters."""
    stored = await watermarks.load_all(conn)
    mark, marks = _marks(stored, now, times, kafka_topics)
    answer: dict[str, Any]
    if kafka_topics is None:
        state = stored.get(EMBEDDED_WATERMARK, watermarks.NOTHING_REPORTED).state
        answer = {
            "mode": "embedded",
            "watermark": _iso(mark),
            "watermark_lag_s": _lag(now, mark),
            "max_event_time": _iso(state.max_event_time),
            "last_arrival_at": _iso(state.last_arrival_at),
        }
    else:
        partitions = [
            {
                "partition": name,
                "watermark": _iso(marks[name]),
                "watermark_lag_s": _lag(now, marks[name]),
                "max_event_time": _iso(stored[name].state.max_event_time),
                "caught_up": stored[name].caught_up,
                "reported_at": _iso(stored[name].reported_at),
                "since_report_s": _lag(now, stored[name].reported_at),
            }
            for name in marks
        ]
        answer = {
            "mode": "kafka",
            "watermark": _iso(mark),
            "watermark_lag_s": _lag(now, mark),
            "partitions": partitions,
            "partitions_behind": sum(1 for p in partitions if not p["caught_up"]),
        }
    recent = await conn.execute(
        select(
            dead_letter_table.c.topic,
            dead_letter_table.c.partition,
            dead_letter_table.c.offset,
            dead_letter_table.c.reason,
            dead_letter_table.c.recorded_at,
        )
        .order_by(dead_letter_table.c.recorded_at.desc(), dead_letter_table.c.offset.desc())
        .limit(RECENT_DEAD_LETTERS)
    )
    answer["now"] = now.isoformat()
    answer["dead_letters"] = await dead_letters(conn)
    answer["recent_dead_letters"] = [
        {"topic": t, "partition": p, "offset": o, "reason": r, "recorded_at": _iso(at)} for t, p, o, r, at in recent
    ]
    return answer


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
