"""Model quality kept as labels change: each unit of work takes back what a prediction's previous
label added and adds what its new one adds (service/core/quality.py), per served hour and day,
and merges that into quality_sums and quality_bins at its end, with the stats (stats.merge_all). Reads
answer the figures of a range of served hours or days from those rows, never from predictions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.labels import CurrentLabel
from service.core.policy import UseCasePolicy
from service.core.quality import SUMS, Part, binary_figures, part, regression_figures
from service.store.state import OpenPrediction
from service.store.stats import Merge, hour_start, merge
from service.store.tables import quality_bins, quality_sums

Bucket = Literal["1h", "1d"]
HOURS = {"1h": 1, "1d": 24}
Key = tuple[str, str, int, str, str, str]  # use_case, bucket, period, model, model_version, status


HourKey = tuple[str, int, str, str, str]  # use_case, served hour, model, model_version, status


@dataclass
class QualityDelta:
    """Kept by served hour; the daily rows are summed from the hours on flush (a label change
    costs one update, not one per bucket)."""

    sums: dict[HourKey, list[float]] = field(default_factory=dict)
    bins: dict[tuple[HourKey, int], list[float]] = field(default_factory=dict)  # (negatives, positives, score sum)

    def move(self, task: str, pred: OpenPrediction, before: CurrentLabel | None, after: CurrentLabel | None) -> None:
        """The prediction's label went from `before` to `after` (either None: no label)."""
        assert pred.score is not None
        parts: dict[float, Part | None] = {}  # a status change keeps the label: its part computed once
        for label, sign in ((before, -1), (after, 1)):
            if label is None or isinstance(label.label, str):
                continue
            if label.label not in parts:
                parts[label.label] = part(task, pred.score, label.label)
            contribution = parts[label.label]
            if contribution is None:
                continue
            key = (pred.use_case, pred.hour, pred.model, pred.model_version, label.status.value)
            sums = self.sums.get(key)
            if sums is None:
                self.sums[key] = [sign * value for value in contribution.sums]
            else:
                for i, value in enumerate(contribution.sums):
                    sums[i] += sign * value
            if contribution.bin is not None:
                counts = self.bins.setdefault((key, contribution.bin), [0.0, 0.0, 0.0])
                counts[1 if contribution.positive else 0] += sign
                counts[2] += sign * pred.score


def _by_bucket(hourly: Mapping[tuple[HourKey, int], list[float]]) -> dict[tuple[Any, ...], list[float]]:
    """(hour key, bin) -> values, summed into every bucket's rows: (use_case, bucket, period,
    model, model_version, status, bin)."""
    rows: dict[tuple[Any, ...], list[float]] = {}
    for ((use_case, hour, model, version, status), k), values in hourly.items():
        for bucket, hours in HOURS.items():
            key = (use_case, bucket, hour // hours, model, version, status, k)
            total = rows.get(key)
            rows[key] = list(values) if total is None else [a + b for a, b in zip(total, values, strict=True)]
    return rows


def merges_of(delta: QualityDelta) -> list[Merge]:
    """The delta as merges into its tables (counts as integers: the float sums of ±1 are whole)."""
    found = []
    if delta.sums:
        sums = _by_bucket({(key, -1): values for key, values in delta.sums.items()})
        found.append(merge(quality_sums, {k[:-1]: (round(v[0]), *v[1:]) for k, v in sums.items()}, "add"))
    if delta.bins:
        bins = _by_bucket(delta.bins)
        found.append(merge(quality_bins, {k: (round(v[0]), round(v[1]), v[2]) for k, v in bins.items()}, "add"))
    return found


@dataclass(frozen=True, slots=True)
class Selection:
    """The figures of one use case per served bucket in [period_from, period_to), per model and
    (by_version) version, of the model and version named if any."""

    use_case: str
    bucket: Bucket
    period_from: int
    period_to: int
    by_version: bool = True
    model: str | None = None
    model_version: str | None = None

    def where(self, table: Any) -> list[Any]:
        conditions = [
            table.c.use_case == self.use_case,
            table.c.bucket == self.bucket,
            table.c.period >= self.period_from,
            table.c.period < self.period_to,
        ]
        if self.model is not None:
            conditions.append(table.c.model == self.model)
        if self.model_version is not None:
            conditions.append(table.c.model_version == self.model_version)
        return conditions


def period_start(bucket: Bucket, period: int) -> datetime:
    return hour_start(period * HOURS[bucket])


def _figures(task: str, sums: list[float], bins: dict[int, list[float]]) -> dict[str, Any]:
    return binary_figures(sums, bins) if task == "binary" else regression_figures(sums)


async def report(conn: AsyncConnection, policy: UseCasePolicy, selection: Selection) -> list[dict[str, Any]]:
    """Per model (and version) and served bucket with labels: the figures over final labels and,
    apart, over provisional ones."""
    Group = tuple[str, str, int, str]  # model, version ('' when not by version), period, status
    sums: dict[Group, list[float]] = {}
    bins: dict[Group, dict[int, list[float]]] = defaultdict(dict)
    by_version = selection.by_version
    s, b = quality_sums.c, quality_bins.c
    query = select(s.model, s.model_version, s.period, s.status, *(s[name] for name in SUMS))
    for model, version, period, status, *values in await conn.execute(
        query.where(*selection.where(quality_sums), s.count > 0)
    ):
        total = sums.setdefault((model, version if by_version else "", period, status), [0.0] * len(SUMS))
        for i, value in enumerate(values):
            total[i] += value
    if policy.task == "binary":
        query = select(b.model, b.model_version, b.period, b.status, b.bin, b.negatives, b.positives, b.score_sum)
        rows = await conn.execute(query.where(*selection.where(quality_bins), b.negatives + b.positives > 0))
        for model, version, period, status, k, negatives, positives, score_sum in rows:
            counts = bins[(model, version if by_version else "", period, status)].setdefault(k, [0.0, 0.0, 0.0])
            counts[0] += negatives
            counts[1] += positives
            counts[2] += score_sum

    empty = _figures(policy.task, [0.0] * len(SUMS), {})
    models: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for (model, version, period, status), total in sorted(sums.items()):
        periods = models[(model, version)]
        start = period_start(selection.bucket, period).isoformat()
        entry = periods.setdefault(period, {"start": start, "final": empty, "provisional": empty})
        entry[status] = _figures(policy.task, total, bins.get((model, version, period, status), {}))
    answer = []
    for (model, version), periods in sorted(models.items()):
        named: dict[str, Any] = {"model": model or None}
        if selection.by_version:
            named["model_version"] = version or None
        answer.append(named | {"buckets": [periods[p] for p in sorted(periods)]})
    return answer


@dataclass(frozen=True, slots=True)
class Latest:
    use_case: str
    model: str
    model_version: str
    status: str
    start: datetime
    figures: dict[str, Any]


async def latest(conn: AsyncConnection, tasks: Mapping[str, str], since_hour: int) -> list[Latest]:
    """Per use case (of those given, with their task), model, version and label status: the
    figures of the latest served hour from since_hour on that holds such labels (a version
    retired before it has none: its gauges go, and a scrape reads only recent rows)."""
    s, b = quality_sums.c, quality_bins.c
    last = (
        select(s.use_case, s.model, s.model_version, s.status, func.max(s.period).label("period"))
        .where(s.bucket == "1h", s.count > 0, s.period >= since_hour)
        .group_by(s.use_case, s.model, s.model_version, s.status)
        .subquery()
    )

    def joined(c: Any) -> Any:
        names = ("use_case", "model", "model_version", "status", "period")
        return and_(c.bucket == "1h", *(c[n] == last.c[n] for n in names))

    keys = (s.use_case, s.model, s.model_version, s.status, s.period)
    found: dict[tuple[str, str, str, str, int], list[float]] = {}
    for row in await conn.execute(select(*keys, *(s[n] for n in SUMS)).join(last, joined(s))):
        found[tuple(row[: len(keys)])] = list(row[len(keys) :])
    bins: dict[tuple[str, str, str, str, int], dict[int, list[float]]] = defaultdict(dict)
    query = select(b.use_case, b.model, b.model_version, b.status, b.period, b.bin, b.negatives, b.positives)
    for row in await conn.execute(query.add_columns(b.score_sum).join(last, joined(b))):
        bins[tuple(row[:5])][row.bin] = [row.negatives, row.positives, row.score_sum]
    return [
        Latest(uc, model, version, status, hour_start(period), _figures(tasks[uc], total, bins.get(key, {})))
        for key, total in sorted(found.items())
        for uc, model, version, status, period in [key]
        if uc in tasks
    ]
