"""Counters and delay histograms, accumulated per transaction and added to the tables on flush.

Every figure is keyed by use case, event type and the hour its prediction was served, so the
feedback-loop endpoint reads a few aggregated rows instead of scanning events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.histogram import bucket_of
from service.core.policy import LabelKind
from service.store.bulk import run
from service.store.tables import delay_buckets, delay_buckets_daily, delay_max, stat_counters


class Stat(StrEnum):
    """The counters kept per use case, event type and served hour (stat_counters.name)."""

    SERVED = "served"
    EVENTS = "events"  # joined events, by type
    TOO_LATE = "too_late"
    CLOCK_SKEW = "clock_skew"  # stamped before their prediction was served
    INVALID_EVENTS = "invalid_events"
    ORPHANS_EXPIRED = "orphans_expired"
    LABEL_CHANGES = "label_changes"
    REVISIONS = "revisions"  # implicit negatives a counted positive turned into 1
    FINALIZED = "finalized"
    EXPIRED = "expired"  # final with no label (regression windows)
    LABELS_EXPLICIT = "labels_explicit"
    LABELS_BEHAVIORAL = "labels_behavioral"
    LABELS_NATURAL = "labels_natural"
    LABELS_IMPLICIT_NEGATIVE = "labels_implicit_negative"

    @classmethod
    def labels(cls, kind: LabelKind) -> Stat:
        """Current labels of this kind (looked up: an enum's call by value costs a microsecond,
        twice for every label change)."""
        return _LABEL_STAT_OF[kind]


_LABEL_STAT_OF = {kind: Stat(f"labels_{kind.value}") for kind in LabelKind}
# The label counters, by the kind they count.
LABEL_STATS = {stat: kind for kind, stat in _LABEL_STAT_OF.items()}
# Event outcomes also exported to Prometheus as they happen.
EVENT_OUTCOMES = (Stat.TOO_LATE, Stat.CLOCK_SKEW, Stat.INVALID_EVENTS, Stat.ORPHANS_EXPIRED)

NO_EVENT_TYPE = ""
NO_USE_CASE = ""  # orphans that expired before any prediction told their use case


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)


def served_hour(served_at: datetime) -> int:
    """Hours since the epoch (timedelta arithmetic: an aware datetime's timestamp() costs 4x)."""
    return (served_at - _EPOCH) // _HOUR


def hour_start(hour: int) -> datetime:
    return _EPOCH + hour * _HOUR


def by_day(buckets: Mapping[tuple[str, str, int, int], int]) -> Counter[tuple[str, str, int, int]]:
    """Delay histogram counts keyed (use case, event type, served hour, bucket), summed by served day."""
    daily: Counter[tuple[str, str, int, int]] = Counter()
    for (use_case, event_type, hour, bucket), n in buckets.items():
        daily[(use_case, event_type, hour // 24, bucket)] += n
    return daily


@dataclass
class StatsDelta:
    counters: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)
    buckets: Counter[tuple[str, str, int, int]] = field(default_factory=Counter)
    maxima: dict[tuple[str, str, int], float] = field(default_factory=dict)
    delays: list[tuple[str, str, float]] = field(default_factory=list)  # for Prometheus, after commit

    def count(self, use_case: str, name: Stat, hour: int, n: int = 1, event_type: str = NO_EVENT_TYPE) -> None:
        self.counters[(use_case, name, event_type, hour)] += n

    def delay(self, use_case: str, event_type: str, hour: int, delay_s: float) -> None:
        self.buckets[(use_case, event_type, hour, bucket_of(delay_s))] += 1
        key = (use_case, event_type, hour)
        self.maxima[key] = max(delay_s, self.maxima.get(key, 0.0))
        self.delays.append((use_case, event_type, delay_s))

    def total(self, name: Stat) -> int:
        return sum(n for (_, counter, _, _), n in self.counters.items() if counter == name)


@cache
def _upsert_sql(dialect: str, table: Table, combine: str) -> str:
    """INSERT of a row keyed by the table's primary key (in column order), its other columns merged
    into a stored row by `combine`: "add" each, or "max" of its one other column; SQLite and
    PostgreSQL spell it alike but for the placeholders and the maximum."""
    keys = [c.name for c in table.primary_key.columns]
    values = [c.name for c in table.columns if not c.primary_key]
    names = ", ".join(f'"{n}"' for n in [*keys, *values])
    marks = ", ".join("?" if dialect == "sqlite" else f"${i}" for i in range(1, len(keys) + len(values) + 1))
    greatest = "max" if dialect == "sqlite" else "greatest"
    merged = []
    for value in values:
        stored, new = f'{table.name}."{value}"', f'excluded."{value}"'
        merged.append(f'"{value}" = ' + (f"{stored} + {new}" if combine == "add" else f"{greatest}({stored}, {new})"))
    if combine != "add" and len(values) != 1:
        raise ValueError(f"{table.name}: max merges one column")
    conflict = ", ".join(f'"{k}"' for k in keys)
    insert = f"INSERT INTO {table.name} ({names}) VALUES ({marks})"
    return f"{insert} ON CONFLICT ({conflict}) DO UPDATE SET {', '.join(merged)}"


async def merge_rows(conn: AsyncConnection, table: Table, values: Mapping[tuple[Any, ...], Any], combine: str) -> None:
    """Merge values (one per row, or a tuple of the table's other columns) into a table keyed like
    them; rows in key order so concurrent writers lock them alike, none that would add nothing.
    Plain driver statements: keys and values need no type processing."""
    rows = []
    for key, value in sorted(values.items()):
        row = value if isinstance(value, tuple) else (value,)
        if combine != "add" or any(row):
            rows.append((*key, *row))
    if rows:
        await run(conn, _upsert_sql(conn.dialect.name, table, combine), rows)


async def flush(conn: AsyncConnection, delta: StatsDelta) -> None:
    """Add the delta to the tables."""
    await merge_rows(conn, stat_counters, delta.counters, "add")
    if delta.buckets:
        await merge_rows(conn, delay_buckets, delta.buckets, "add")
        await merge_rows(conn, delay_buckets_daily, by_day(delta.buckets), "add")
        await merge_rows(conn, delay_max, delta.maxima, "max")
