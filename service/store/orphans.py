"""Events whose prediction is not stored yet: joined when it comes, rescued when another writer
stored it, expired after the orphan TTL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.model import Disposition, EventRecord, Evidence
from service.core.validation import InvalidRecord, check_event
from service.store.bulk import update_rows
from service.store.database import one_of
from service.store.labels import Labeler
from service.store.records import CHUNK, chunks
from service.store.stats import NO_USE_CASE, Stat
from service.store.tables import events, predictions


async def join_orphans(labeler: Labeler, prediction_ids: list[str]) -> None:
    """Join the events that were waiting for these predictions."""
    if labeler.state is not None and labeler.state.orphans_absent:
        return  # the writer, alone in writing, knows none waits (a statement off every group)
    orphans: list[Any] = []
    for chunk in chunks(prediction_ids):
        # Locked: of two writers reaching the same orphan, the second finds it joined.
        result = await labeler.conn.execute(
            select(events)
            .where(one_of(labeler.conn, events.c.prediction_id, chunk), events.c.disposition == Disposition.ORPHAN)
            .order_by(events.c.id)
            .with_for_update()
        )
        orphans.extend(result.all())
    if not orphans:
        return
    preds = await labeler.load_predictions(sorted({o.prediction_id for o in orphans}))
    updates = []
    dropped = [o.id for o in orphans if o.prediction_id in labeler.erased]
    for start in range(0, len(dropped), CHUNK):
        await labeler.conn.execute(delete(events).where(events.c.id.in_(dropped[start : start + CHUNK])))
    for orphan in orphans:
        if orphan.prediction_id in labeler.erased:
            continue
        pred = preds[orphan.prediction_id]
        reason = None
        try:
            check_event(
                labeler.policies,
                0,
                EventRecord(orphan.event_id, pred.prediction_id, orphan.type, value=orphan.value),
                pred.use_case,
            )
        except InvalidRecord as exc:
            reason = exc.reason
        if reason is None:
            evidence = Evidence(orphan.event_id, orphan.type, orphan.occurred_at, orphan.value, orphan.actor)
            disposition = labeler.join(pred, evidence)
        else:
            disposition = Disposition.INVALID
            labeler.stats.count(pred.use_case, Stat.INVALID_EVENTS, pred.hour, event_type=orphan.type)
        updates.append({"id": orphan.id, "disposition": disposition, "reason": reason, "orphan_expires_at": None})
    await update_rows(labeler.conn, events, "id", updates)
    await labeler.relabel([p for p in preds.values() if p.touched])


async def tend(labeler: Labeler, batch: int = 1000) -> None:
    """Expire the orphans whose TTL passed and join those whose prediction another writer
    stored meanwhile."""
    await _expire(labeler)
    await _rescue(labeler, batch)


async def none_waiting(conn: AsyncConnection) -> bool:
    """No event waits for its prediction (read from the orphan-expiry index)."""
    found = await conn.execute(select(events.c.id).where(events.c.orphan_expires_at.is_not(None)).limit(1))
    return found.first() is None


async def _rescue(labeler: Labeler, batch: int) -> None:
    """Join orphans whose prediction was committed by another writer while they were stored
    (two Kafka joiners, an event published to another partition than its prediction)."""
    result = await labeler.conn.execute(
        select(events.c.prediction_id)
        .join(predictions, predictions.c.prediction_id == events.c.prediction_id)
        .where(events.c.orphan_expires_at.is_not(None), events.c.disposition == Disposition.ORPHAN)
        .distinct()
        .limit(batch)
    )
    waiting = [row.prediction_id for row in result]
    if waiting:
        await join_orphans(labeler, waiting)


async def _expire(labeler: Labeler) -> None:
    result = await labeler.conn.execute(
        update(events)
        .where(events.c.orphan_expires_at <= labeler.now)
        .values(disposition=Disposition.EXPIRED_ORPHAN, orphan_expires_at=None)
    )
    expired: int = result.rowcount
    if expired:
        labeler.stats.count(NO_USE_CASE, Stat.ORPHANS_EXPIRED, 0, n=expired)
