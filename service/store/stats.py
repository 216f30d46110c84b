"""Counters and delay histograms, accumulated per transaction and merged into their tables at its
end (merge_all, with the model-quality rows beside them).

Every figure is keyed by use case, event type and the hour its prediction was served, so the
feedback-loop endpoint reads a few aggregated rows instead of scanning events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.histogram import bucket_of
from service.core.policy import LabelKind
from service.store.bulk import run, unnest
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


@dataclass(frozen=True, slots=True)
class Merge:
    """Rows merged into a table keyed like them: each row its key columns, then the table's other
    columns, "add"ed to a stored row's or, for "max", the greater of its one other column."""

    table: Table
    combine: str
    rows: list[tuple[Any, ...]]


def merge(table: Table, values: Mapping[tuple[Any, ...], Any], combine: str) -> Merge:
    """values: one per key, or a tuple of the table's other columns. Rows in key order, so that
    concurrent writers lock them alike; none that would add nothing."""
    rows = []
    for key, value in sorted(values.items()):
        row = value if isinstance(value, tuple) else (value,)
        if combine != "add" or any(row):
            rows.append((*key, *row))
    return Merge(table, combine, rows)


def _in_row_order(table: Table) -> list[Column[Any]]:
    """A merge row's columns: the primary key's, then the others, each in table order."""
    return [*table.primary_key.columns, *(c for c in table.columns if not c.primary_key)]


def _upsert(table: Table, combine: str, source: str, greatest: str) -> str:
    """INSERT of the rows `source` gives (columns in row order), merged into the stored rows by
    `combine`; SQLite and PostgreSQL spell it alike but for the maximum."""
    keys = [c.name for c in table.primary_key.columns]
    values = [c.name for c in table.columns if not c.primary_key]
    if combine != "add" and len(values) != 1:
        raise ValueError(f"{table.name}: max merges one column")
    names = ", ".join(f'"{c.name}"' for c in _in_row_order(table))
    merged = []
    for value in values:
        stored, new = f'{table.name}."{value}"', f'excluded."{value}"'
        merged.append(f'"{value}" = ' + (f"{stored} + {new}" if combine == "add" else f"{greatest}({stored}, {new})"))
    conflict = ", ".join(f'"{k}"' for k in keys)
    return f"INSERT INTO {table.name} ({names}) {source} ON CONFLICT ({conflict}) DO UPDATE SET {', '.join(merged)}"


@cache
def _sqlite_sql(table: Table, combine: str) -> str:
    return _upsert(table, combine, "VALUES (" + ", ".join("?" * len(table.columns)) + ")", "max")


@cache
def _postgres_sql(targets: tuple[tuple[Table, str], ...]) -> str:
    """One statement for every merge: each a data-modifying CTE over one array per column."""
    steps, first = [], 1
    for i, (table, combine) in enumerate(targets):
        names = [c.name for c in _in_row_order(table)]
        source = f"SELECT * FROM {unnest(table, names, first)}"
        steps.append(f"m{i} AS ({_upsert(table, combine, source, 'greatest')})")
        first += len(names)
    return "WITH " + ", ".join(steps) + " SELECT 1"


async def merge_all(conn: AsyncConnection, merges: Sequence[Merge]) -> None:
    """Every merge of a unit of work. On PostgreSQL in one statement (a unit's six merges cost one
    round trip instead of six); SQLite, in-process, runs each."""
    merges = [m for m in merges if m.rows]
    if not merges:
        return
    if conn.dialect.name != "postgresql":
        for m in merges:
            await run(conn, _sqlite_sql(m.table, m.combine), m.rows)
        return
    columns = tuple(list(column) for m in merges for column in zip(*m.rows, strict=True))
    await run(conn, _postgres_sql(tuple((m.table, m.combine) for m in merges)), columns)


def merges_of(delta: StatsDelta) -> list[Merge]:
    """The delta's counters and delay histograms, as merges into their tables."""
    found = [merge(stat_counters, delta.counters, "add")]
    if delta.buckets:
        found.append(merge(delay_buckets, delta.buckets, "add"))
        found.append(merge(delay_buckets_daily, by_day(delta.buckets), "add"))
        found.append(merge(delay_max, delta.maxima, "max"))
    return found
