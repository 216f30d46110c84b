"""Where records enter the label state: duplicates and conflicts recognised by id and content
digest, new predictions stored (and the events that waited for them joined), events joined to
their predictions or kept as orphans."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.model import Disposition, EventRecord, Evidence, Phase, PredictionRecord, event_time
from service.core.quality import model_output
from service.core.validation import InvalidRecord, check_event, check_prediction
from service.core.windows import deadlines
from service.store.bulk import insert_rows, values_by_key
from service.store.labels import Labeler
from service.store.orphans import join_orphans
from service.store.records import IngestResult, Keyed, Rejected, content_hash, split_duplicates
from service.store.state import OpenPrediction
from service.store.stats import Stat, served_hour
from service.store.tables import events, predictions


async def add_predictions(labeler: Labeler, submissions: Sequence[Sequence[PredictionRecord]]) -> list[IngestResult]:
    """The predictions of each submission, all in one pass; Rejected names a refused one."""
    _check_each(submissions, lambda index, record: check_prediction(labeler.policies, index, record))
    fresh, results = await _fresh(labeler.conn, predictions, "prediction_id", submissions)
    if not fresh:
        return results
    rows = []
    for _, digest, record in fresh:
        served_at = event_time(record, labeler.now)
        policy = labeler.policies.use_cases[record.use_case]
        deadline = deadlines(policy, served_at)
        score = model_output(policy, record.output)  # checked valid above
        rows.append(
            {
                "prediction_id": record.prediction_id,
                "use_case": record.use_case,
                "model": record.model,
                "model_version": record.model_version,
                "served_at": served_at,
                "subject_id": record.subject_id,
                "features": record.features,
                "output": record.output,
                "context": record.context,
                "content_hash": digest,
                "received_at": record.received_at or labeler.now,
                "window_end": deadline.window_end,
                "seal_at": deadline.seal_at,
                "phase": Phase.OPEN.value,
                "deadline": deadline.window_end,
                "score": score,
            }
        )
        labeler.stats.count(record.use_case, Stat.SERVED, served_hour(served_at))
        labeler.seen[record.prediction_id] = OpenPrediction(
            prediction_id=record.prediction_id,
            use_case=record.use_case,
            served_at=served_at,
            deadline=deadline,
            phase=Phase.OPEN,
            current=None,
            feedback_delay_s=None,
            seq=None,
            stored_phase=Phase.OPEN,
            evidence=[],  # nothing can have counted for a prediction not stored until now
            model=record.model or "",
            model_version=record.model_version or "",
            score=score,
        )
    await insert_rows(labeler.conn, predictions, rows)
    await join_orphans(labeler, [r["prediction_id"] for r in rows])
    return results


async def add_events(labeler: Labeler, submissions: Sequence[Sequence[EventRecord]]) -> list[IngestResult]:
    """The events of each submission, all in one pass; Rejected names a refused one."""
    preds = await labeler.load_predictions(sorted({r.prediction_id for records in submissions for r in records}))

    def check(index: int, record: EventRecord) -> None:
        pred = preds.get(record.prediction_id)
        check_event(labeler.policies, index, record, None if pred is None else pred.use_case)

    _check_each(submissions, check)
    fresh, results = await _fresh(labeler.conn, events, "event_id", submissions)
    if not fresh:
        return results
    rows = []
    for _, digest, record in fresh:
        if record.prediction_id in labeler.erased:
            continue  # accepted and dropped: nothing about an erased prediction is stored again
        occurred_at = event_time(record, labeler.now)
        pred = preds.get(record.prediction_id)
        if pred is None:
            disposition, expires = Disposition.ORPHAN, labeler.now + labeler.orphan_ttl
            if labeler.state is not None:
                labeler.state.orphans_absent = False  # now (even if this unit rolls back: unknown)
        else:
            evidence = Evidence(record.event_id, record.type, occurred_at, record.value, record.actor)
            disposition, expires = labeler.join(pred, evidence), None
        rows.append(
            {
                "event_id": record.event_id,
                "prediction_id": record.prediction_id,
                "type": record.type,
                "occurred_at": occurred_at,
                "value": record.value,
                "actor": record.actor,
                "payload": record.payload,
                "content_hash": digest,
                "received_at": record.received_at or labeler.now,
                "disposition": disposition,
                "orphan_expires_at": expires,
            }
        )
    await insert_rows(labeler.conn, events, rows)
    await labeler.relabel([p for p in preds.values() if p.touched])
    return results


Record = TypeVar("Record", PredictionRecord, EventRecord)


def _check_each(submissions: Sequence[Sequence[Record]], check: Callable[[int, Record], None]) -> None:
    """Every record against the policies; Rejected names the first submission with one refused."""
    for number, records in enumerate(submissions):
        for index, record in enumerate(records):
            try:
                check(index, record)
            except InvalidRecord as exc:
                raise Rejected(number, exc) from exc


async def _fresh(
    conn: AsyncConnection, table: Table, key: str, submissions: Sequence[Sequence[Record]]
) -> tuple[list[Keyed], list[IngestResult]]:
    """The records not stored yet, and each submission's accepted and duplicate counts."""
    keyed = [[(getattr(r, key), content_hash(r), r) for r in records] for records in submissions]
    ids = sorted({k for records in keyed for k, _, _ in records})
    stored = await values_by_key(conn, table, key, "content_hash", ids)
    return split_duplicates(key, keyed, stored)
