"""Forgetting: a subject's predictions, events and labels erased on request, and what a use case's
retention let expire purged. The aggregates (stat counters, delay histograms) stay: they name no one.

An erased prediction keeps one row, emptied of everything but its id, use case, model and times:
its tombstone. Anything sent again under its id is a duplicate (a replay never brings it back), an
event for it is dropped, and when it was in the dataset the tombstone takes a new seq with status
`erased`, so a trainer's incremental copy learns to delete it. An audit row records who asked,
when and how many rows went; never whose."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.model import LabelStatus, Phase
from service.core.policy import PolicySet
from service.store.bulk import update_rows
from service.store.database import Database, one_of
from service.store.labels import reserve_seqs
from service.store.records import ERASED_HASH, chunks
from service.store.tables import erasures, events, label_history, predictions

SUBJECT = "subject"
RETENTION = "retention"


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What one erasure or purge removed."""

    predictions: int = 0
    events: int = 0
    labels: int = 0  # label_history rows: every revision of every label
    erasure_id: int | None = None  # its audit row


def _tombstone(prediction_id: str, seq: int | None) -> dict[str, Any]:
    return {
        "prediction_id": prediction_id,
        "subject_id": None,
        "features": None,
        "output": None,
        "score": None,  # read from the output
        "context": None,
        "content_hash": ERASED_HASH,
        "phase": Phase.FINAL.value,
        "deadline": None,
        "label": None,
        "label_kind": None,
        "label_rule": None,
        "label_sources": None,
        "label_status": LabelStatus.ERASED.value,
        "revision": None,
        "seq": seq,
        "feedback_delay_s": None,
    }


async def _delete_about(conn: AsyncConnection, prediction_ids: Sequence[str]) -> tuple[int, int]:
    """Delete the events and label revisions of these predictions; their counts."""
    removed_events = removed_labels = 0
    for chunk in chunks(prediction_ids):
        removed_events += (
            await conn.execute(delete(events).where(one_of(conn, events.c.prediction_id, chunk)))
        ).rowcount
        removed_labels += (
            await conn.execute(delete(label_history).where(one_of(conn, label_history.c.prediction_id, chunk)))
        ).rowcount
    return removed_events, removed_labels


async def _audit(
    conn: AsyncConnection, kind: str, by: str, now: datetime, counts: Forgotten, use_case: str | None = None
) -> Forgotten:
    result = await conn.execute(
        insert(erasures)
        .values(
            kind=kind,
            requested_by=by,
            requested_at=now,
            use_case=use_case,
            predictions=counts.predictions,
            events=counts.events,
            labels=counts.labels,
        )
        .returning(erasures.c.id)
    )
    return Forgotten(counts.predictions, counts.events, counts.labels, result.scalar_one())


async def erase_subject(conn: AsyncConnection, subject_forms: Sequence[str], by: str, now: datetime) -> Forgotten:
    """Erase every prediction whose subject_id is one of subject_forms (the id and, where a policy
    hashes it, its hash), with its events and labels. The rows are locked first: a joiner working
    on one of them either committed before (and its work is erased too) or sees the tombstone."""
    result = await conn.execute(
        select(predictions.c.prediction_id, predictions.c.use_case, predictions.c.seq)
        .where(one_of(conn, predictions.c.subject_id, list(subject_forms)))
        .order_by(predictions.c.prediction_id)  # the joiners' lock order: no deadlock cycles
        .with_for_update()
    )
    rows = result.all()
    ids = [row.prediction_id for row in rows]
    removed_events, removed_labels = await _delete_about(conn, ids)
    in_dataset: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row.seq is not None:
            in_dataset[row.use_case].append(row.prediction_id)
    seqs: dict[str, int] = {}
    for use_case, listed in sorted(in_dataset.items()):
        seqs.update(zip(listed, await reserve_seqs(conn, use_case, len(listed)), strict=True))
    await update_rows(conn, predictions, "prediction_id", [_tombstone(pid, seqs.get(pid)) for pid in ids])
    return await _audit(conn, SUBJECT, by, now, Forgotten(len(ids), removed_events, removed_labels))


def _expired(use_case: str, served_before: datetime) -> tuple[ColumnElement[bool], ...]:
    """The predictions a purge takes: final, served before the retention's cut."""
    return (
        predictions.c.use_case == use_case,
        predictions.c.served_at < served_before,
        predictions.c.phase == Phase.FINAL.value,
    )


async def purge(
    conn: AsyncConnection, use_case: str, served_before: datetime, by: str, now: datetime, limit: int
) -> Forgotten:
    """Delete up to `limit` final predictions of a use case served before `served_before`, oldest
    first, with their events and labels; an audit row when anything went. A trainer's copy is its
    own: purged rows leave no tombstone."""
    due = select(predictions.c.prediction_id).where(*_expired(use_case, served_before))
    oldest = list((await conn.execute(due.order_by(predictions.c.served_at).limit(limit))).scalars())
    # Locked in the joiners' order (by id), not by age: no deadlock cycle with a joiner's batch.
    result = await conn.execute(
        select(predictions.c.prediction_id)
        .where(one_of(conn, predictions.c.prediction_id, oldest), predictions.c.phase == Phase.FINAL.value)
        .order_by(predictions.c.prediction_id)
        .with_for_update()
    )
    ids = list(result.scalars())
    if not ids:
        return Forgotten()
    removed_events, removed_labels = await _delete_about(conn, ids)
    for chunk in chunks(ids):
        await conn.execute(delete(predictions).where(one_of(conn, predictions.c.prediction_id, chunk)))
    return await _audit(conn, RETENTION, by, now, Forgotten(len(ids), removed_events, removed_labels), use_case)


async def audit_log(conn: AsyncConnection, limit: int) -> list[dict[str, Any]]:
    """The latest erasures and purges, newest first."""
    result = await conn.execute(select(erasures).order_by(erasures.c.id.desc()).limit(limit))
    return [{str(name): value for name, value in row._mapping.items()} for row in result]


async def due(conn: AsyncConnection, use_case: str, served_before: datetime) -> int:
    """How many predictions a purge would delete now."""
    result = await conn.execute(select(func.count()).where(*_expired(use_case, served_before)))
    return int(result.scalar_one())


async def purge_expired(db: Database, policies: PolicySet, now: datetime, by: str, batch: int) -> dict[str, Forgotten]:
    """Purge what every use case's retention let expire, `batch` predictions per transaction so
    that writers get their turn between them; the totals per use case that has a retention."""
    totals: dict[str, Forgotten] = {}
    for use_case, policy in sorted(policies.use_cases.items()):
        if policy.retention is None:
            continue
        total = Forgotten()
        while True:
            async with db.write() as conn:
                step = await purge(conn, use_case, now - policy.retention, by, now, batch)
            total = Forgotten(
                total.predictions + step.predictions, total.events + step.events, total.labels + step.labels
            )
            if step.predictions < batch:
                break
        totals[use_case] = total
    return totals
