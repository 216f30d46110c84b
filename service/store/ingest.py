"""One unit of work per request (or, in Kafka mode, per batch): observe the watermark, apply the
records, close what the watermark passed, add up the stats. The caller commits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.model import EventRecord, PredictionRecord
from service.core.policy import PolicySet
from service.core.windows import effective_watermark, observe
from service.store import stats, watermarks
from service.store.repository import IngestResult, Labeler
from service.store.stats import StatsDelta

EMBEDDED_WATERMARK = "embedded"


@dataclass(frozen=True, slots=True)
class LabelContext:
    policies: PolicySet
    allowed_disorder: timedelta
    idle_timeout: timedelta
    orphan_ttl: timedelta
    watermark_name: str = EMBEDDED_WATERMARK


@dataclass(frozen=True, slots=True)
class UnitResult:
    ingest: IngestResult
    stats: StatsDelta
    watermark: datetime | None


async def _run(
    conn: AsyncConnection,
    ctx: LabelContext,
    now: datetime,
    event_times: list[datetime],
    apply: Callable[[Labeler], Awaitable[IngestResult]],
) -> UnitResult:
    stored = await watermarks.load(conn, ctx.watermark_name)
    state = observe(stored, event_times, now)
    if state != stored:
        await watermarks.save(conn, ctx.watermark_name, state)
    watermark = effective_watermark(state, now, ctx.allowed_disorder, ctx.idle_timeout)
    labeler = Labeler(conn, ctx.policies, now, ctx.orphan_ttl)
    labeler.watermark = watermark
    result = await apply(labeler)
    await labeler.sweep(watermark)
    await stats.flush(conn, labeler.stats)
    return UnitResult(ingest=result, stats=labeler.stats, watermark=watermark)


async def ingest_predictions(
    conn: AsyncConnection, ctx: LabelContext, records: Sequence[PredictionRecord], now: datetime
) -> UnitResult:
    times = [r.served_at or now for r in records]
    return await _run(conn, ctx, now, times, lambda labeler: labeler.add_predictions(records))


async def ingest_events(
    conn: AsyncConnection, ctx: LabelContext, records: Sequence[EventRecord], now: datetime
) -> UnitResult:
    times = [r.occurred_at or now for r in records]
    return await _run(conn, ctx, now, times, lambda labeler: labeler.add_events(records))


async def _nothing(_: Labeler) -> IngestResult:
    return IngestResult(accepted=0, duplicates=0)


async def tick(conn: AsyncConnection, ctx: LabelContext, now: datetime) -> UnitResult:
    """The periodic step: with no arrivals the watermark may follow the wall clock."""
    return await _run(conn, ctx, now, [], _nothing)
