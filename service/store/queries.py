"""Reads: a prediction's lineage, dataset pages and the feedback-loop figures."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, Text, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.histogram import quantile
from service.core.policy import LabelKind
from service.store.database import one_of
from service.store.stats import Stat, served_hour
from service.store.tables import dead_letters as dead_letter_table
from service.store.tables import (
    delay_buckets,
    delay_buckets_daily,
    delay_max,
    events,
    label_history,
    predictions,
    stat_counters,
)


async def use_cases_of(conn: AsyncConnection, prediction_ids: list[str]) -> dict[str, str]:
    """The use case of each stored prediction among these ids."""
    found: dict[str, str] = {}
    for start in range(0, len(prediction_ids), 1000):
        chunk = prediction_ids[start : start + 1000]
        result = await conn.execute(
            select(predictions.c.prediction_id, predictions.c.use_case).where(
                one_of(conn, predictions.c.prediction_id, chunk)
            )
        )
        found.update({pid: use_case for pid, use_case in result})
    return found


async def lineage(conn: AsyncConnection, prediction_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(predictions).where(predictions.c.prediction_id == prediction_id))).one_or_none()
    if row is None:
        return None
    p = row._mapping
    event_rows = await conn.execute(
        select(events).where(events.c.prediction_id == prediction_id).order_by(events.c.occurred_at, events.c.event_id)
    )
    history_rows = await conn.execute(
        select(label_history).where(label_history.c.prediction_id == prediction_id).order_by(label_history.c.seq)
    )
    return {
        "prediction": {
            k: p[k]
            for k in (
                "prediction_id",
                "use_case",
                "model",
                "model_version",
                "served_at",
                "subject_id",
                "features",
                "output",
                "context",
                "received_at",
            )
        },
        "window_end": p["window_end"],
        "seal_at": p["seal_at"],
        "phase": p["phase"],
        "label": None
        if p["label_kind"] is None
        else {
            "label": p["label"],
            "label_kind": p["label_kind"],
            "status": p["label_status"],
            "rule": p["label_rule"],
            "sources": p["label_sources"],
            "revision": p["revision"],
            "seq": p["seq"],
            "feedback_delay_s": p["feedback_delay_s"],
        },
        "events": [
            {
                k: e._mapping[k]
                for k in (
                    "event_id",
                    "type",
                    "occurred_at",
                    "value",
                    "actor",
                    "payload",
                    "received_at",
                    "disposition",
                    "reason",
                )
            }
            for e in event_rows
        ],
        "history": [
            {
                k: h._mapping[k]
                for k in (
                    "revision",
                    "seq",
                    "label",
                    "kind",
                    "rule",
                    "sources",
                    "status",
                    "feedback_delay_s",
                    "recorded_at",
                    "watermark",
                )
            }
            for h in history_rows
        ],
    }


DATASET_COLUMNS = (
    "prediction_id",
    "model",
    "model_version",
    "served_at",
    "subject_id",
    "features",
    "output",
    "label",
    "label_kind",
    "status",
    "sources",
    "feedback_delay_s",
    "revision",
    "seq",
)


@dataclass(frozen=True, slots=True)
class DatasetFilter:
    use_case: str
    since: int = 0
    model: str | None = None
    model_version: str | None = None
    served_from: datetime | None = None
    served_to: datetime | None = None
    final_only: bool = False


def _dataset_query(f: DatasetFilter, after: int, limit: int, *columns: Any) -> Select[Any]:
    query = (
        select(*columns)
        .where(predictions.c.use_case == f.use_case, predictions.c.seq > after)
        .order_by(predictions.c.seq)
        .limit(limit)
    )
    if f.model is not None:
        query = query.where(predictions.c.model == f.model)
    if f.model_version is not None:
        query = query.where(predictions.c.model_version == f.model_version)
    if f.served_from is not None:
        query = query.where(predictions.c.served_at >= f.served_from)
    if f.served_to is not None:
        query = query.where(predictions.c.served_at < f.served_to)
    if f.final_only:
        query = query.where(predictions.c.label_status == "final")
    return query


_DATASET_SOURCES = (
    predictions.c.prediction_id,
    predictions.c.model,
    predictions.c.model_version,
    predictions.c.served_at,
    predictions.c.subject_id,
    predictions.c.features,
    predictions.c.output,
    predictions.c.label,
    predictions.c.label_kind,
    predictions.c.label_status,
    predictions.c.label_sources,
    predictions.c.feedback_delay_s,
    predictions.c.revision,
    predictions.c.seq,
)


async def dataset_page(conn: AsyncConnection, f: DatasetFilter, after: int, limit: int) -> list[tuple[Any, ...]]:
    """Up to `limit` labeled rows with seq > after, in seq order (a keyset page), as tuples in
    DATASET_COLUMNS order; the JSON columns as JSON text (or None), served_at as utc_text."""
    columns = [
        # JSON columns as their text: exported as they are stored, never parsed and re-encoded.
        cast(c, Text) if name in JSON_COLUMNS else utc_text(conn, c) if c is predictions.c.served_at else c
        for name, c in zip(DATASET_COLUMNS, _DATASET_SOURCES, strict=True)
    ]
    result = await conn.execute(_dataset_query(f, after, limit, *columns))
    return [tuple(row) for row in result]


async def dataset_lines(conn: AsyncConnection, f: DatasetFilter, after: int, limit: int) -> list[tuple[str, int]]:
    """The same page as JSONL lines, each with its seq. The database encodes each row as a JSON
    object: in C, from the stored JSON text, where Python would build a dict and encode it
    (measured: 3x the rows/s of a SQLite export)."""
    values: list[Any] = []
    for name, column in zip(DATASET_COLUMNS, _DATASET_SOURCES, strict=True):
        value: ColumnElement[Any] = column
        if column is predictions.c.served_at:
            value = utc_text(conn, column)
        elif name in JSON_COLUMNS and conn.dialect.name == "sqlite":
            value = func.json(column)  # stored JSON text embedded as JSON, not as a string
        values += [literal_column(f"'{name}'"), value]
    line: ColumnElement[str] = (
        cast(func.json_build_object(*values), Text)
        if conn.dialect.name == "postgresql"
        else func.json_object(*values, type_=Text)
    )
    result = await conn.execute(_dataset_query(f, after, limit, line, predictions.c.seq))
    return [(text, seq) for text, seq in result]


def utc_text(conn: AsyncConnection, column: Any) -> ColumnElement[str]:
    """A stored UTC time as fixed-width RFC 3339 text, 2026-11-29T16:20:01.500000+00:00, made by
    the database so an export never converts times in Python."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"', type_=Text)
    # SQLAlchemy keeps SQLite times as naive UTC text, 2026-11-29 16:20:01.500000.
    return func.replace(cast(column, Text), " ", "T", type_=Text) + "+00:00"


JSON_COLUMNS = frozenset({"features", "output", "label", "sources"})


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
