"""One unit of work per group of requests (embedded mode) or per consumed batch (Kafka mode):
settle the watermark, apply each submission's records, close what the watermark passed, add up
the stats. The caller commits; durability is that commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from service.config import Settings
from service.core.model import EventRecord, PredictionRecord, event_time
from service.core.policy import PolicySet
from service.core.windows import (
    PartitionProgress,
    combined_watermark,
    effective_watermark,
    observe,
    partition_watermark,
)
from service.store import intake, orphans, tables, watermarks, windows
from service.store.database import dialect_insert
from service.store.labels import Labeler
from service.store.records import IngestResult, Rejected
from service.store.state import OpenPrediction, OpenPredictions
from service.store.stats import StatsDelta

EMBEDDED_WATERMARK = "embedded"


@dataclass(frozen=True, slots=True)
class LabelContext:
    policies: PolicySet
    allowed_disorder: timedelta
    idle_timeout: timedelta
    orphan_ttl: timedelta
    owner_timeout: timedelta = timedelta(seconds=15)
    sweep_limit: int = 10_000  # windows closed per transaction at most

    @classmethod
    def from_settings(cls, settings: Settings, policies: PolicySet) -> LabelContext:
        return cls(
            policies=policies,
            allowed_disorder=settings.allowed_disorder,
            idle_timeout=settings.idle_timeout,
            orphan_ttl=settings.orphan_ttl,
            owner_timeout=settings.kafka_owner_timeout,
            sweep_limit=settings.sweep_limit,
        )


@dataclass(frozen=True, slots=True)
class Submission:
    """The records of one request (embedded mode) or of one consumed batch (Kafka mode)."""

    predictions: Sequence[PredictionRecord] = ()
    events: Sequence[EventRecord] = ()

    @property
    def size(self) -> int:
        return len(self.predictions) + len(self.events)

    def event_times(self, now: datetime) -> list[datetime]:
        times = [event_time(r, now) for r in self.predictions]
        return times + [event_time(r, now) for r in self.events]


@dataclass(frozen=True, slots=True)
class SubmissionResult:
    predictions: IngestResult
    events: IngestResult


@dataclass(frozen=True, slots=True)
class UnitResult:
    results: list[SubmissionResult]  # one per submission, in order
    predictions: list[OpenPrediction]  # every prediction the unit read or wrote, as it left them
    stats: StatsDelta
    watermark: datetime | None
    more_due: bool  # the sweep stopped at its limit: windows the watermark passed are still open
    orphans_absent: bool | None = None  # tended orphans: whether none is left waiting
    progress: PartitionProgress | None = None  # embedded mode: the watermark's stored half, as left


async def _embedded_watermark(
    conn: AsyncConnection,
    ctx: LabelContext,
    times: list[datetime],
    now: datetime,
    known: PartitionProgress | None,
    probe: bool = False,
) -> PartitionProgress:
    """The watermark's stored half after these arrivals, saved when it moved. known: as the
    writer last committed it, else read from the store."""
    if known is None:
        stored = await watermarks.load(conn, [EMBEDDED_WATERMARK])
        known = stored.get(EMBEDDED_WATERMARK, watermarks.NOTHING_REPORTED)
    state = observe(known.state, times, now)
    if state == known.state and not probe:
        return known
    progress = replace(known, state=state)
    await watermarks.save(conn, {EMBEDDED_WATERMARK: progress})
    return progress


async def _apply(
    conn: AsyncConnection,
    ctx: LabelContext,
    now: datetime,
    watermark: datetime | None,
    submissions: Sequence[Submission],
    tend_orphans: bool,
    state: OpenPredictions | None = None,
) -> UnitResult:
    """The submissions as if they had arrived as one batch (predictions, then events), then the
    sweep. Rejected names a submission that must be left out."""
    labeler = Labeler(conn, ctx.policies, now, ctx.orphan_ttl, state)
    labeler.watermark = watermark
    predictions = await intake.add_predictions(labeler, [s.predictions for s in submissions])
    events = await intake.add_events(labeler, [s.events for s in submissions])
    results = [SubmissionResult(p, e) for p, e in zip(predictions, events, strict=True)]
    orphans_absent = None
    if tend_orphans:
        await orphans.tend(labeler)
        if state is not None:  # the embedded writer, alone in writing: it may remember the answer
            orphans_absent = await orphans.none_waiting(conn)
    more_due = await windows.sweep(labeler, watermark, ctx.sweep_limit)
    await labeler.flush()
    return UnitResult(results, list(labeler.seen.values()), labeler.stats, watermark, more_due, orphans_absent)


async def ingest(
    conn: AsyncConnection,
    ctx: LabelContext,
    now: datetime,
    submissions: Sequence[Submission] = (),
    state: OpenPredictions | None = None,
    probe: bool = False,
) -> UnitResult:
    """Embedded mode: one watermark for everything this store receives. With no submissions, the
    periodic step: the watermark may follow the wall clock, and orphans are tended (wall-clock
    work that need not cost every request a statement). state: the writer's open predictions,
    which the caller publishes after the commit (unit.predictions). probe: store the watermark
    even if it did not move, so that the commit proves the store takes writes again."""
    times = [t for submission in submissions for t in submission.event_times(now)]
    known = None if state is None else state.watermark
    progress = await _embedded_watermark(conn, ctx, times, now, known, probe)
    watermark = effective_watermark(progress.state, now, ctx.allowed_disorder, ctx.idle_timeout)
    unit = await _apply(conn, ctx, now, watermark, submissions, tend_orphans=not submissions, state=state)
    return replace(unit, progress=progress)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class PartitionReport:
    """What a consumer read from one of its partitions in a batch."""

    event_times: list[datetime]
    caught_up: bool  # its position reached the partition's end
    looked_at: datetime  # when: a retried transaction must not date the claim later


async def ingest_partitions(
    conn: AsyncConnection,
    ctx: LabelContext,
    now: datetime,
    reports: dict[str, PartitionReport],
    all_partitions: Sequence[str],
    batch: Submission,
    dead_letters: Sequence[DeadLetter] = (),
) -> UnitResult:
    """Kafka mode: record this consumer's partitions' progress, then close windows by the slowest
    partition of all, whoever owns it. dead_letters: the batch's messages bound for the
    dead-letter topic, recorded in the same transaction (once each, however often replayed)."""
    if dead_letters:
        await conn.execute(
            dialect_insert(conn, tables.dead_letters).on_conflict_do_nothing(),
            [{**asdict(d), "recorded_at": now} for d in dead_letters],
        )
    stored = await watermarks.load(conn, all_partitions)
    reported = {
        name: PartitionProgress(
            state=observe(stored.get(name, watermarks.NOTHING_REPORTED).state, report.event_times, report.looked_at),
            caught_up=report.caught_up,
            reported_at=report.looked_at,
        )
        for name, report in reports.items()
    }
    await watermarks.save(conn, reported)
    stored.update(reported)
    watermark = combined_watermark(
        [
            partition_watermark(
                stored.get(name, watermarks.NOTHING_REPORTED),
                now,
                ctx.allowed_disorder,
                ctx.idle_timeout,
                ctx.owner_timeout,
            )
            for name in all_partitions
        ]
    )
    try:
        # Every batch: an orphan's prediction may have been committed by another joiner.
        return await _apply(conn, ctx, now, watermark, [batch], tend_orphans=True)
    except Rejected as exc:
        raise exc.error from None  # a Kafka batch is one submission: the joiner handles its error
