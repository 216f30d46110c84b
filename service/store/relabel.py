"""`labelloop relabel`: the stored history of a use case labeled again under the policy in force,
in bounded batches, each one transaction. A batch takes the next predictions by (served_at,
prediction_id) (keyset: no offset to rescan), locks them in the joiners' lock order (by id),
judges their stored events again (service/core/relabeling.py), moves their window end and seal
to the new policy's, and lets the Labeler resolve and store what changed: a new label revision
with a new dataset seq and the new policy's digest. Erased predictions are never read.

A prediction whose window is still open under the new policy keeps what it has until its window
closes: the live path decides it then. A dry run does all of this on a read connection and writes
nothing."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import utcnow
from service.core.model import Disposition, Evidence, LabelStatus, Phase
from service.core.relabeling import RelabelReport, rejudge
from service.core.windows import deadlines, phase_at
from service.store import feedback
from service.store.bulk import update_rows
from service.store.database import Database, one_of
from service.store.ingest import LabelContext
from service.store.labels import PREDICTION_COLUMNS, Labeler, next_deadline, prediction_from_row
from service.store.state import OpenPrediction
from service.store.stats import Stat
from service.store.tables import events, predictions

JOINED = (Disposition.COUNTED, Disposition.TOO_LATE, Disposition.INVALID)
ATTEMPTS = 5  # a batch that fails (a deadlock with a joiner, a lost connection) is run again
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last prediction a batch took: the next batch starts after it."""

    served_at: datetime
    prediction_id: str


async def current_watermark(
    conn: AsyncConnection, ctx: LabelContext, now: datetime, kafka_topics: Iterable[str] | None
) -> datetime | None:
    """The watermark the live path would close windows by now: the embedded writer's (the wall
    clock once idle), or in Kafka mode the slowest partition of the topics consumed."""
    times = feedback.WatermarkTimes(ctx.allowed_disorder, ctx.idle_timeout, ctx.owner_timeout)
    return await feedback.current_watermark(conn, now, times, kafka_topics)


def _passed(pred: OpenPrediction, watermark: datetime | None) -> datetime | None:
    """The watermark a prediction's phase proves was reached (its window end once closed, its seal
    once final), or the current one if later: the current one can be lower (joiners stopped, a
    partition quiet past the owner timeout) and must not reopen what was closed."""
    reached = {Phase.CLOSED: pred.deadline.window_end, Phase.FINAL: pred.deadline.seal_at}.get(pred.phase)
    if reached is None or (watermark is not None and watermark > reached):
        return watermark
    return reached


async def _next_ids(
    conn: AsyncConnection, use_case: str, after: Cursor | None, served_from: datetime | None, limit: int
) -> list[Cursor]:
    c = predictions.c
    query = select(c.served_at, c.prediction_id).where(
        c.use_case == use_case, or_(c.label_status.is_(None), c.label_status != LabelStatus.ERASED.value)
    )
    if served_from is not None:
        query = query.where(c.served_at >= served_from)
    if after is not None:
        same_time = and_(c.served_at == after.served_at, c.prediction_id > after.prediction_id)
        query = query.where(or_(c.served_at > after.served_at, same_time))
    result = await conn.execute(query.order_by(c.served_at, c.prediction_id).limit(limit))
    return [Cursor(row.served_at, row.prediction_id) for row in result]


async def _load(labeler: Labeler, ids: list[str], lock: bool) -> list[OpenPrediction]:
    query = select(*PREDICTION_COLUMNS).where(one_of(labeler.conn, predictions.c.prediction_id, sorted(ids)))
    query = query.order_by(predictions.c.prediction_id)  # the joiners' lock order
    result = await labeler.conn.execute(query.with_for_update() if lock else query)
    return [labeler.saw(prediction_from_row(row)) for row in result if row.label_status != LabelStatus.ERASED]


def _moved(labeler: Labeler, pred: OpenPrediction, event: Evidence, old: Disposition, new: Disposition) -> None:
    """Move the event counters as the event's use changed, as if it had been used so from the start."""
    count, hour = labeler.stats.count, pred.hour
    for disposition, sign in ((old, -1), (new, 1)):
        if disposition is Disposition.TOO_LATE:
            count(pred.use_case, Stat.TOO_LATE, hour, n=sign, event_type=event.type)
        if disposition is Disposition.INVALID:
            count(pred.use_case, Stat.INVALID_EVENTS, hour, n=sign, event_type=event.type)
    if Disposition.INVALID in (old, new):  # joined events count, with their delay; invalid ones do not
        joined = 1 if old is Disposition.INVALID else -1
        count(pred.use_case, Stat.EVENTS, hour, n=joined, event_type=event.type)
        if joined > 0:
            delay = (event.occurred_at - pred.served_at).total_seconds()
            labeler.stats.delay(pred.use_case, event.type, hour, max(0.0, delay))
            if delay < 0:
                count(pred.use_case, Stat.CLOCK_SKEW, hour, event_type=event.type)


async def relabel_batch(
    labeler: Labeler, use_case: str, ids: list[str], watermark: datetime | None, write: bool
) -> RelabelReport:
    """Relabel these predictions under labeler.policies; store what changed when `write`."""
    conn, report = labeler.conn, RelabelReport()
    policy = labeler.policies.use_cases[use_case]
    labeler.watermark = watermark
    preds = await _load(labeler, ids, lock=write)
    stored: dict[str, list[tuple[int, Evidence, Disposition, str | None]]] = defaultdict(list)
    ids = [p.prediction_id for p in preds]
    result = await conn.execute(
        select(
            events.c.id,
            events.c.prediction_id,
            events.c.event_id,
            events.c.type,
            events.c.occurred_at,
            events.c.value,
            events.c.actor,
            events.c.disposition,
            events.c.reason,
        ).where(one_of(conn, events.c.prediction_id, ids), events.c.disposition.in_(JOINED))
    )
    for row in result:
        evidence = Evidence(row.event_id, row.type, row.occurred_at, row.value, row.actor)
        stored[row.prediction_id].append((row.id, evidence, Disposition(row.disposition), row.reason))
    event_updates, rescheduled = [], []
    for pred in preds:
        new_deadline = deadlines(policy, pred.served_at)
        counted = []
        for row_id, event, old, old_reason in stored[pred.prediction_id]:
            new, reason = rejudge(labeler.policies, use_case, pred.deadline, new_deadline, event, old)
            if new is Disposition.COUNTED:
                counted.append(event)
            if (new, reason) != (old, old_reason):
                event_updates.append({"id": row_id, "disposition": new.value, "reason": reason})
            if new is not old:
                report.events[(old.value, new.value)] += 1
                _moved(labeler, pred, event, old, new)
        passed = _passed(pred, watermark)
        if new_deadline != pred.deadline:
            pred.deadline = new_deadline
            rescheduled.append(pred)
        was_final, before = pred.phase is Phase.FINAL, pred.current
        pred.phase = phase_at(new_deadline, passed)
        if was_final and pred.phase is not Phase.FINAL:  # a later seal: it may change again
            labeler.stats.count(use_case, Stat.FINALIZED, pred.hour, n=-1)
            if before is None:
                labeler.stats.count(use_case, Stat.EXPIRED, pred.hour, n=-1)
        report.open += pred.phase is Phase.OPEN
        decision = labeler.apply(pred, counted)
        if was_final and pred.phase is Phase.FINAL and before is None and pred.current is not None:
            labeler.stats.count(use_case, Stat.EXPIRED, pred.hour, n=-1)  # final without a label no more
        if before is not None and decision is None:
            report.kept += 1  # the new policy gives no label: labels are never withdrawn, so reported
        if pred.needs_seq:
            assert pred.current is not None  # only a labeled prediction takes a seq
            if before is not None and before.revision == pred.current.revision:
                report.status_only += 1
            else:
                report.revision(before, pred.current)
    report.scanned, report.rescheduled = len(preds), len(rescheduled)
    if write:
        await labeler.store(preds)
        await update_rows(conn, events, "id", event_updates)
        await update_rows(
            conn,
            predictions,
            "prediction_id",
            [
                {
                    "prediction_id": p.prediction_id,
                    "window_end": p.deadline.window_end,
                    "seal_at": p.deadline.seal_at,
                    "deadline": next_deadline(p),
                }
                for p in rescheduled
            ],
        )
        await labeler.flush()
    return report


async def relabel(
    db: Database,
    ctx: LabelContext,
    use_case: str,
    *,
    kafka_topics: Iterable[str] | None,
    served_from: datetime | None = None,
    batch: int = 1000,
    dry_run: bool = False,
    progress: Callable[[RelabelReport], None] = lambda _: None,
) -> RelabelReport:
    """Relabel a use case's stored predictions (served from `served_from`) under ctx.policies,
    `batch` predictions per transaction; the report of what changed (or would, dry).
    kafka_topics: the topics the joiners consume (None: embedded), whose partitions' watermark
    applies."""
    total, after = RelabelReport(), None
    while True:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                ahead, step = await _batch(db, ctx, use_case, after, served_from, batch, kafka_topics, dry_run)
                break
            except DBAPIError as exc:  # rolled back: the same batch again is safe
                if attempt == ATTEMPTS:
                    raise
                log.warning("relabel batch failed (%s), retry %d", type(exc.orig).__name__, attempt)
                await asyncio.sleep(0.05 * 2**attempt)
        if not ahead:
            return total
        total.add(step)
        progress(total)
        after = ahead[-1]


async def _batch(
    db: Database,
    ctx: LabelContext,
    use_case: str,
    after: Cursor | None,
    served_from: datetime | None,
    batch: int,
    kafka_topics: Iterable[str] | None,
    dry_run: bool,
) -> tuple[list[Cursor], RelabelReport]:
    session = db.read() if dry_run else db.write()
    async with session as conn:
        now = utcnow()
        ahead = await _next_ids(conn, use_case, after, served_from, batch)
        if not ahead:
            return [], RelabelReport()
        watermark = await current_watermark(conn, ctx, now, kafka_topics)
        labeler = Labeler(conn, ctx.policies, now, ctx.orphan_ttl, count_fake_negatives=False)
        step = await relabel_batch(labeler, use_case, [c.prediction_id for c in ahead], watermark, not dry_run)
    return ahead, step
