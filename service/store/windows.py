"""Where windows close: the predictions whose deadline the watermark passed, from the deadline
index, earliest first, a bounded number per transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from service.core.windows import phase_at
from service.store.bulk import driver_time, run
from service.store.labels import PREDICTION_COLUMNS, Labeler, prediction_from_row
from service.store.state import OpenPrediction
from service.store.tables import predictions


async def sweep(labeler: Labeler, watermark: datetime | None, limit: int, batch: int = 1000) -> bool:
    """Where windows close: move the predictions whose deadline the watermark has passed,
    earliest first, at most `limit` of them, so that a transaction stays short however far
    the watermark jumped (the end of a backfill, a restart after an outage). True when some
    were left due, for the caller's next transaction."""
    labeler.watermark = watermark
    if watermark is None:
        return False
    moved = 0
    while moved < limit:
        asked = min(batch, limit - moved)
        due = await _due(labeler, watermark, asked)
        for pred in due:
            pred.phase = phase_at(pred.deadline, watermark)
            pred.touched = True
        await labeler.relabel(due)
        moved += len(due)
        if len(due) < asked:  # none left due (or left to a concurrent sweeper): no statement to ask again
            return False
    return True


async def _due(labeler: Labeler, watermark: datetime, limit: int) -> list[OpenPrediction]:
    """The predictions whose deadline the watermark passed, earliest first; SKIP LOCKED:
    concurrent sweepers (Kafka joiners) each close a window exactly once. With a state, only
    their ids are read: the rest is known."""
    conn = labeler.conn
    if labeler.state is None:
        result = await conn.execute(
            select(*PREDICTION_COLUMNS)
            .where(predictions.c.deadline <= watermark)
            .order_by(predictions.c.deadline)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [labeler.seen.get(row.prediction_id) or labeler.saw(prediction_from_row(row)) for row in result]
    # The embedded writer: ids only, by a plain driver statement (every unit of work runs it).
    mark, lock = ("$1", " FOR UPDATE SKIP LOCKED") if conn.dialect.name == "postgresql" else ("?", "")
    sql = f"SELECT prediction_id FROM predictions WHERE deadline <= {mark} ORDER BY deadline LIMIT {int(limit)}{lock}"
    ids = [pid for (pid,) in await run(conn, sql, (driver_time(conn, watermark),))]
    known = await labeler.load_predictions(ids)
    return [known[pid] for pid in ids]
