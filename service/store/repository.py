"""Where a record becomes part of the label state: the repository applies the core's decisions to
the tables inside the caller's transaction. Nothing here commits; durability is the commit the
caller makes after these calls return.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.labels import CurrentLabel, label_change
from service.core.model import (
    Disposition,
    EventRecord,
    Evidence,
    LabelStatus,
    Phase,
    PredictionRecord,
    Source,
    event_time,
)
from service.core.policy import LabelKind, PolicySet
from service.core.resolution import resolve
from service.core.validation import InvalidRecord, check_event, check_prediction
from service.core.windows import Deadlines, deadlines, event_timing, phase_at
from service.store.bulk import insert_rows, update_rows
from service.store.database import dialect_insert, one_of
from service.store.records import (
    IngestResult,
    Keyed,
    Rejected,
    chunks,
    content_hash,
    source_json,
    split_duplicates,
)
from service.store.state import OpenPrediction, OpenPredictions
from service.store.stats import NO_USE_CASE, Stat, StatsDelta, served_hour
from service.store.tables import dataset_seqs, events, label_history, predictions

_PREDICTION_COLUMNS = (
    predictions.c.prediction_id,
    predictions.c.use_case,
    predictions.c.served_at,
    predictions.c.window_end,
    predictions.c.seal_at,
    predictions.c.phase,
    predictions.c.label,
    predictions.c.label_kind,
    predictions.c.label_rule,
    predictions.c.label_sources,
    predictions.c.label_status,
    predictions.c.revision,
    predictions.c.seq,
    predictions.c.feedback_delay_s,
)


def _prediction_from_row(row: Any) -> OpenPrediction:
    current = None
    if row.label_kind is not None:
        current = CurrentLabel(
            label=row.label,
            kind=LabelKind(row.label_kind),
            rule=row.label_rule,
            sources=tuple(Source(**s) for s in row.label_sources),
            revision=row.revision,
            status=LabelStatus(row.label_status),
        )
    return OpenPrediction(
        prediction_id=row.prediction_id,
        use_case=row.use_case,
        served_at=row.served_at,
        deadline=Deadlines(window_end=row.window_end, seal_at=row.seal_at),
        phase=Phase(row.phase),
        stored_phase=Phase(row.phase),
        current=current,
        feedback_delay_s=row.feedback_delay_s,
        seq=row.seq,
    )


class Labeler:
    """Applies the label core to the stored state, inside one caller-owned transaction."""

    def __init__(
        self,
        conn: AsyncConnection,
        policies: PolicySet,
        now: datetime,
        orphan_ttl: timedelta,
        state: OpenPredictions | None = None,
    ) -> None:
        """state: the open predictions of a writer alone in writing them, or None to read every
        prediction from the store (Kafka joiners, which close each other's windows)."""
        self.conn = conn
        self.policies = policies
        self.now = now
        self.orphan_ttl = orphan_ttl
        self.state = state
        self.stats = StatsDelta()
        self.watermark: datetime | None = None  # recorded in the label history
        # Every prediction this unit read or wrote, as it now stands: its caller publishes them
        # to the state once the unit committed.
        self.seen: dict[str, OpenPrediction] = {}

    # -- predictions -----------------------------------------------------------------------

    async def add_predictions(self, submissions: Sequence[Sequence[PredictionRecord]]) -> list[IngestResult]:
        """The predictions of each submission, all in one pass; Rejected names a refused one."""
        for number, records in enumerate(submissions):
            for index, record in enumerate(records):
                try:
                    check_prediction(self.policies, index, record)
                except InvalidRecord as exc:
                    raise Rejected(number, exc) from exc
        keyed = [[(r.prediction_id, content_hash(r), r) for r in records] for records in submissions]
        stored = await self._stored_hashes(predictions.c.prediction_id, predictions.c.content_hash, keyed)
        fresh, results = split_duplicates("prediction_id", keyed, stored)
        if not fresh:
            return results
        rows = []
        for _, digest, record in fresh:
            served_at = event_time(record, self.now)
            deadline = deadlines(self.policies.use_cases[record.use_case], served_at)
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
                    "received_at": record.received_at or self.now,
                    "window_end": deadline.window_end,
                    "seal_at": deadline.seal_at,
                    "phase": Phase.OPEN.value,
                    "deadline": deadline.window_end,
                }
            )
            self.stats.count(record.use_case, Stat.SERVED, served_hour(served_at))
            self.seen[record.prediction_id] = OpenPrediction(
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
            )
        await insert_rows(self.conn, predictions, rows)
        await self._join_orphans([r["prediction_id"] for r in rows])
        return results

    async def _join_orphans(self, prediction_ids: list[str]) -> None:
        """Join the events that were waiting for these predictions."""
        orphans: list[Any] = []
        for chunk in chunks(prediction_ids):
            # Locked: of two writers reaching the same orphan, the second finds it joined.
            result = await self.conn.execute(
                select(events)
                .where(one_of(self.conn, events.c.prediction_id, chunk), events.c.disposition == Disposition.ORPHAN)
                .order_by(events.c.id)
                .with_for_update()
            )
            orphans.extend(result.all())
        if not orphans:
            return
        preds = await self._load_predictions(sorted({o.prediction_id for o in orphans}))
        updates = []
        for orphan in orphans:
            pred = preds[orphan.prediction_id]
            reason = None
            try:
                check_event(
                    self.policies,
                    0,
                    EventRecord(orphan.event_id, pred.prediction_id, orphan.type, value=orphan.value),
                    pred.use_case,
                )
            except InvalidRecord as exc:
                reason = exc.reason
            if reason is None:
                evidence = Evidence(orphan.event_id, orphan.type, orphan.occurred_at, orphan.value, orphan.actor)
                disposition = self._join(pred, evidence)
            else:
                disposition = Disposition.INVALID
                self.stats.count(pred.use_case, Stat.INVALID_EVENTS, pred.hour, event_type=orphan.type)
            updates.append({"id": orphan.id, "disposition": disposition, "reason": reason, "orphan_expires_at": None})
        await update_rows(self.conn, events, "id", updates)
        await self._relabel([p for p in preds.values() if p.touched])

    # -- events ----------------------------------------------------------------------------

    async def add_events(self, submissions: Sequence[Sequence[EventRecord]]) -> list[IngestResult]:
        """The events of each submission, all in one pass; Rejected names a refused one."""
        preds = await self._load_predictions(sorted({r.prediction_id for records in submissions for r in records}))
        for number, records in enumerate(submissions):
            for index, record in enumerate(records):
                pred = preds.get(record.prediction_id)
                try:
                    check_event(self.policies, index, record, None if pred is None else pred.use_case)
                except InvalidRecord as exc:
                    raise Rejected(number, exc) from exc
        keyed = [[(r.event_id, content_hash(r), r) for r in records] for records in submissions]
        stored = await self._stored_hashes(events.c.event_id, events.c.content_hash, keyed)
        fresh, results = split_duplicates("event_id", keyed, stored)
        if not fresh:
            return results
        rows = []
        for _, digest, record in fresh:
            occurred_at = event_time(record, self.now)
            pred = preds.get(record.prediction_id)
            if pred is None:
                disposition, expires = Disposition.ORPHAN, self.now + self.orphan_ttl
            else:
                evidence = Evidence(record.event_id, record.type, occurred_at, record.value, record.actor)
                disposition, expires = self._join(pred, evidence), None
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
                    "received_at": record.received_at or self.now,
                    "disposition": disposition,
                    "orphan_expires_at": expires,
                }
            )
        await insert_rows(self.conn, events, rows)
        await self._relabel([p for p in preds.values() if p.touched])
        return results

    def _join(self, pred: OpenPrediction, event: Evidence) -> Disposition:
        """Account for one event joined to its prediction; the caller relabels touched predictions."""
        event_type, occurred_at = event.type, event.occurred_at
        delay = (occurred_at - pred.served_at).total_seconds()
        if delay < 0:
            self.stats.count(pred.use_case, Stat.CLOCK_SKEW, pred.hour, event_type=event_type)
        self.stats.delay(pred.use_case, event_type, pred.hour, max(0.0, delay))
        self.stats.count(pred.use_case, Stat.EVENTS, pred.hour, event_type=event_type)
        timing = event_timing(pred.deadline, occurred_at, pred.phase)
        if timing is Disposition.TOO_LATE:
            self.stats.count(pred.use_case, Stat.TOO_LATE, pred.hour, event_type=event_type)
        else:
            pred.touched = True
            if pred.evidence is not None:
                pred.evidence.append(event)
        return timing

    # -- windows ---------------------------------------------------------------------------

    async def sweep(self, watermark: datetime | None, limit: int, batch: int = 1000) -> bool:
        """Where windows close: move the predictions whose deadline the watermark has passed,
        earliest first, at most `limit` of them, so that a transaction stays short however far
        the watermark jumped (the end of a backfill, a restart after an outage). True when some
        were left due, for the caller's next transaction."""
        self.watermark = watermark
        if watermark is None:
            return False
        moved = 0
        while moved < limit:
            due = await self._due(watermark, min(batch, limit - moved))
            if not due:
                return False
            for pred in due:
                pred.phase = phase_at(pred.deadline, watermark)
                pred.touched = True
            await self._relabel(due)
            moved += len(due)
        return True

    async def _due(self, watermark: datetime, limit: int) -> list[OpenPrediction]:
        """The predictions whose deadline the watermark passed, earliest first; SKIP LOCKED:
        concurrent sweepers (Kafka joiners) each close a window exactly once. With a state, only
        their ids are read: the rest is known."""
        query = select(*_PREDICTION_COLUMNS) if self.state is None else select(predictions.c.prediction_id)
        result = await self.conn.execute(
            query.where(predictions.c.deadline <= watermark)
            .order_by(predictions.c.deadline)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if self.state is None:
            return [self.seen.get(row.prediction_id) or self._saw(_prediction_from_row(row)) for row in result]
        ids = [row.prediction_id for row in result]
        known = await self._load_predictions(ids)
        return [known[pid] for pid in ids]

    async def tend_orphans(self, batch: int = 1000) -> None:
        """Expire the orphans whose TTL passed and join those whose prediction another writer
        stored meanwhile."""
        await self._expire_orphans()
        await self._rescue_orphans(batch)

    async def _rescue_orphans(self, batch: int) -> None:
        """Join orphans whose prediction was committed by another writer while they were stored
        (two Kafka joiners, an event published to another partition than its prediction)."""
        result = await self.conn.execute(
            select(events.c.prediction_id)
            .join(predictions, predictions.c.prediction_id == events.c.prediction_id)
            .where(events.c.orphan_expires_at.is_not(None), events.c.disposition == Disposition.ORPHAN)
            .distinct()
            .limit(batch)
        )
        waiting = [row.prediction_id for row in result]
        if waiting:
            await self._join_orphans(waiting)

    async def _expire_orphans(self) -> None:
        result = await self.conn.execute(
            update(events)
            .where(events.c.orphan_expires_at <= self.now)
            .values(disposition=Disposition.EXPIRED_ORPHAN, orphan_expires_at=None)
        )
        expired: int = result.rowcount
        if expired:
            self.stats.count(NO_USE_CASE, Stat.ORPHANS_EXPIRED, 0, n=expired)

    # -- labels ----------------------------------------------------------------------------

    async def _relabel(self, preds: list[OpenPrediction]) -> None:
        """Resolve each prediction's label from its counted events and store what changed."""
        if not preds:
            return
        evidence: dict[str, list[Evidence]] = defaultdict(list)
        for chunk in chunks([p.prediction_id for p in preds if p.evidence is None]):
            result = await self.conn.execute(
                select(
                    events.c.prediction_id,
                    events.c.event_id,
                    events.c.type,
                    events.c.occurred_at,
                    events.c.value,
                    events.c.actor,
                ).where(one_of(self.conn, events.c.prediction_id, chunk), events.c.disposition == Disposition.COUNTED)
            )
            for row in result:
                evidence[row.prediction_id].append(
                    Evidence(row.event_id, row.type, row.occurred_at, row.value, row.actor)
                )
        for pred in preds:
            if pred.evidence is None:
                pred.evidence = evidence[pred.prediction_id]
            self._apply(pred, pred.evidence)
        await self._store(preds)

    def _apply(self, pred: OpenPrediction, counted: list[Evidence]) -> None:
        policy = self.policies.use_cases[pred.use_case]
        decision = resolve(policy, pred.served_at, counted, window_closed=pred.phase is not Phase.OPEN)
        change = label_change(pred.current, decision)
        status = LabelStatus.FINAL if pred.phase is Phase.FINAL else LabelStatus.PROVISIONAL
        if change is not None:
            if pred.current is not None:
                self.stats.count(pred.use_case, Stat.labels(pred.current.kind), pred.hour, n=-1)
                self.stats.count(pred.use_case, Stat.LABEL_CHANGES, pred.hour)
            self.stats.count(pred.use_case, Stat.labels(change.decision.kind), pred.hour)
            if change.fake_negative:
                self.stats.count(pred.use_case, Stat.REVISIONS, pred.hour)
            pred.current = CurrentLabel(
                label=change.decision.label,
                kind=change.decision.kind,
                rule=change.decision.rule,
                sources=change.decision.sources,
                revision=change.revision,
                status=status,
            )
            pred.feedback_delay_s = change.decision.feedback_delay_s
            pred.needs_seq = True
        elif pred.current is not None and pred.current.status is not status:
            pred.current = replace(pred.current, status=status)
            pred.needs_seq = True  # a status change is a change: final_only trainers must see it
        if pred.phase is Phase.FINAL and pred.stored_phase is not Phase.FINAL:
            self.stats.count(pred.use_case, Stat.FINALIZED, pred.hour)
            if pred.current is None:
                self.stats.count(pred.use_case, Stat.EXPIRED, pred.hour)

    async def _store(self, preds: list[OpenPrediction]) -> None:
        changed = [p for p in preds if p.needs_seq or p.phase is not p.stored_phase]
        if not changed:
            return
        by_use_case: dict[str, list[OpenPrediction]] = defaultdict(list)
        for pred in changed:
            if pred.needs_seq:
                by_use_case[pred.use_case].append(pred)
        for use_case, needing in sorted(by_use_case.items()):
            last = await self._reserve_seqs(use_case, len(needing))
            for offset, pred in enumerate(needing):
                pred.seq = last - len(needing) + 1 + offset
        values = [self._row_values(p) for p in changed]
        await update_rows(self.conn, predictions, "prediction_id", values)
        history = [
            self._history_row(p, v["label_sources"]) for p, v in zip(changed, values, strict=True) if p.needs_seq
        ]
        await insert_rows(self.conn, label_history, history)
        for pred in changed:
            pred.stored_phase = pred.phase
            pred.needs_seq = False
            pred.touched = False

    async def _reserve_seqs(self, use_case: str, count: int) -> int:
        """Hand out `count` dataset seqs for a use case; returns the last one."""
        stmt = dialect_insert(self.conn, dataset_seqs)
        result = await self.conn.execute(
            stmt.values(use_case=use_case, last_seq=count)
            .on_conflict_do_update(index_elements=["use_case"], set_={"last_seq": dataset_seqs.c.last_seq + count})
            .returning(dataset_seqs.c.last_seq)
        )
        last: int = result.scalar_one()
        return last

    @staticmethod
    def _deadline_of(pred: OpenPrediction) -> datetime | None:
        if pred.phase is Phase.OPEN:
            return pred.deadline.window_end
        return pred.deadline.seal_at if pred.phase is Phase.CLOSED else None

    def _row_values(self, pred: OpenPrediction) -> dict[str, Any]:
        label = pred.current
        return {
            "prediction_id": pred.prediction_id,
            "phase": pred.phase.value,
            "deadline": self._deadline_of(pred),
            "label": None if label is None else label.label,
            "label_kind": None if label is None else label.kind.value,
            "label_rule": None if label is None else label.rule,
            "label_sources": None if label is None else [source_json(s) for s in label.sources],
            "label_status": None if label is None else label.status.value,
            "revision": None if label is None else label.revision,
            "seq": pred.seq,
            "feedback_delay_s": pred.feedback_delay_s,
        }

    def _history_row(self, pred: OpenPrediction, sources: list[dict[str, str | None]]) -> dict[str, Any]:
        """sources: the label's sources as _row_values encoded them."""
        label = pred.current
        assert label is not None  # only labeled predictions get a seq
        return {
            "prediction_id": pred.prediction_id,
            "revision": label.revision,
            "seq": pred.seq,
            "label": label.label,
            "kind": label.kind.value,
            "rule": label.rule,
            "sources": sources,
            "status": label.status.value,
            "feedback_delay_s": pred.feedback_delay_s,
            "recorded_at": self.now,
            "watermark": self.watermark,
        }

    # -- lookups ---------------------------------------------------------------------------

    def _saw(self, pred: OpenPrediction) -> OpenPrediction:
        self.seen[pred.prediction_id] = pred
        return pred

    async def _load_predictions(self, prediction_ids: Sequence[str]) -> dict[str, OpenPrediction]:
        """These predictions as this unit knows them, else as the state holds them, else from
        the store (locked until commit); unknown ids are left out."""
        found: dict[str, OpenPrediction] = {}
        missing = []
        for pid in prediction_ids:
            pred = self.seen.get(pid) or (self.state.checkout(pid) if self.state is not None else None)
            if pred is None:
                missing.append(pid)
            else:
                found[pid] = self._saw(pred)
        for chunk in chunks(missing):
            result = await self.conn.execute(
                select(*_PREDICTION_COLUMNS)
                .where(one_of(self.conn, predictions.c.prediction_id, chunk))
                .order_by(predictions.c.prediction_id)  # one lock order for every writer: no deadlock cycles
                .with_for_update()
            )
            for row in result:
                found[row.prediction_id] = self._saw(_prediction_from_row(row))
        return found

    async def _stored_hashes(self, key_column: Any, hash_column: Any, submissions: list[list[Keyed]]) -> dict[str, str]:
        stored: dict[str, str] = {}
        for chunk in chunks(sorted({key for keyed in submissions for key, _, _ in keyed})):
            result = await self.conn.execute(
                select(key_column, hash_column).where(one_of(self.conn, key_column, chunk))
            )
            stored.update({key: digest for key, digest in result})
        return stored
