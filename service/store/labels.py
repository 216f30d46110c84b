"""The label state of one unit of work: the predictions it read or wrote, as it now stands; the
events joined to them; their labels resolved by the core and stored with their history. Nothing
here commits: durability is the commit the caller makes afterwards."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.labels import CurrentLabel, label_change
from service.core.model import Decision, Disposition, Evidence, LabelStatus, Phase, Source
from service.core.policy import LabelKind, PolicySet
from service.core.resolution import resolve
from service.core.windows import Deadlines, event_timing
from service.store import quality, stats
from service.store.bulk import insert_rows, run, update_rows
from service.store.database import one_of
from service.store.quality import QualityDelta
from service.store.records import chunks, source_json
from service.store.state import OpenPrediction, OpenPredictions
from service.store.stats import Stat, StatsDelta
from service.store.tables import events, label_history, predictions

PREDICTION_COLUMNS = (
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
    predictions.c.model,
    predictions.c.model_version,
    predictions.c.score,
)


_RESERVE = (
    "INSERT INTO dataset_seqs (use_case, last_seq) VALUES ({}, {}) ON CONFLICT (use_case) "
    "DO UPDATE SET last_seq = dataset_seqs.last_seq + excluded.last_seq RETURNING last_seq"
)


async def reserve_seqs(conn: AsyncConnection, use_case: str, count: int) -> range:
    """Hand out `count` dataset seqs for a use case, in order (a plain driver statement: every
    unit of work that changes a label runs it)."""
    marks = ("$1", "$2") if conn.dialect.name == "postgresql" else ("?", "?")
    [(last,)] = await run(conn, _RESERVE.format(*marks), (use_case, count))
    return range(last - count + 1, last + 1)


def next_deadline(pred: OpenPrediction) -> datetime | None:
    """The watermark that next moves this prediction's phase: W, then S, then none."""
    if pred.phase is Phase.OPEN:
        return pred.deadline.window_end
    return pred.deadline.seal_at if pred.phase is Phase.CLOSED else None


_PHASES = {phase.value: phase for phase in Phase}  # a dict lookup: 30 ns, calling the enum 500 ns
_KINDS = {kind.value: kind for kind in LabelKind}
_STATUSES = {status.value: status for status in LabelStatus}


def prediction_from_row(row: Any) -> OpenPrediction:
    """A row of PREDICTION_COLUMNS, unpacked by position (a sweep reads thousands)."""
    (pid, use_case, served_at, window_end, seal_at, phase, label, kind, rule, sources, status, revision, seq, delay,
     model, model_version, score) = row  # fmt: skip
    current = None
    if kind is not None:
        current = CurrentLabel(
            label=label,
            kind=_KINDS[kind],
            rule=rule,
            sources=tuple(Source(**s) for s in sources),
            revision=revision,
            status=_STATUSES[status],
        )
    return OpenPrediction(
        prediction_id=pid,
        use_case=use_case,
        served_at=served_at,
        deadline=Deadlines(window_end=window_end, seal_at=seal_at),
        phase=_PHASES[phase],
        stored_phase=_PHASES[phase],
        current=current,
        feedback_delay_s=delay,
        seq=seq,
        model=model or "",
        model_version=model_version or "",
        score=score,
    )


class Labeler:
    """Applies the label core to the stored state, inside one caller-owned transaction; the
    modules beside it (intake, orphans, windows) bring it the predictions to act on."""

    def __init__(
        self,
        conn: AsyncConnection,
        policies: PolicySet,
        now: datetime,
        orphan_ttl: timedelta,
        state: OpenPredictions | None = None,
        count_fake_negatives: bool = True,
    ) -> None:
        """state: the open predictions of a writer alone in writing them, or None to read every
        prediction from the store (Kafka joiners, which close each other's windows).
        count_fake_negatives: off for a relabel, whose revisions tell of a policy change, not of
        the live window's fake negatives."""
        self.conn = conn
        self.policies = policies
        self.now = now
        self.orphan_ttl = orphan_ttl
        self.state = state
        self.count_fake_negatives = count_fake_negatives
        self.stats = StatsDelta()
        self.quality = QualityDelta()
        self.watermark: datetime | None = None  # recorded in the label history
        # Every prediction this unit read or wrote, as it now stands: its caller publishes them
        # to the state once the unit committed.
        self.seen: dict[str, OpenPrediction] = {}
        self.erased: set[str] = set()  # ids whose prediction was erased: what comes for them is dropped

    def saw(self, pred: OpenPrediction) -> OpenPrediction:
        self.seen[pred.prediction_id] = pred
        return pred

    async def load_predictions(self, prediction_ids: Sequence[str]) -> dict[str, OpenPrediction]:
        """These predictions as this unit knows them, else as the state holds them, else from
        the store (locked until commit), in the order asked (it orders their seqs, which must not
        depend on what the state holds); unknown and erased ids are left out (erased ones noted in
        self.erased)."""
        found: dict[str, OpenPrediction] = {}
        missing = []
        for pid in prediction_ids:
            pred = self.seen.get(pid) or (self.state.checkout(pid) if self.state is not None else None)
            if pred is None:
                missing.append(pid)
            else:
                found[pid] = self.saw(pred)
        for chunk in chunks(missing):
            result = await self.conn.execute(
                select(*PREDICTION_COLUMNS)
                .where(one_of(self.conn, predictions.c.prediction_id, chunk))
                .order_by(predictions.c.prediction_id)  # one lock order for every writer: no deadlock cycles
                .with_for_update()
            )
            for row in result:
                if row.label_status == LabelStatus.ERASED:
                    self.erased.add(row.prediction_id)
                else:
                    found[row.prediction_id] = self.saw(prediction_from_row(row))
        return {pid: found[pid] for pid in prediction_ids if pid in found}

    def join(self, pred: OpenPrediction, event: Evidence) -> Disposition:
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

    async def relabel(self, preds: list[OpenPrediction]) -> None:
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
            self.apply(pred, pred.evidence)
        await self.store(preds)

    def apply(self, pred: OpenPrediction, counted: list[Evidence]) -> Decision | None:
        """Resolve the label from these counted events at the prediction's phase; what changed is
        marked for store(). The decision (None: the events give no label)."""
        policy = self.policies.use_cases[pred.use_case]
        before = pred.current
        decision = resolve(policy, pred.served_at, counted, window_closed=pred.phase is not Phase.OPEN)
        change = label_change(pred.current, decision)
        status = LabelStatus.FINAL if pred.phase is Phase.FINAL else LabelStatus.PROVISIONAL
        if change is not None:
            if pred.current is not None:
                self.stats.count(pred.use_case, Stat.labels(pred.current.kind), pred.hour, n=-1)
                self.stats.count(pred.use_case, Stat.LABEL_CHANGES, pred.hour)
            self.stats.count(pred.use_case, Stat.labels(change.decision.kind), pred.hour)
            if change.fake_negative and self.count_fake_negatives:
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
        if pred.current is not before and pred.score is not None:
            self.quality.move(policy.task, pred, before, pred.current)
        return decision

    async def store(self, preds: list[OpenPrediction]) -> None:
        changed = [p for p in preds if p.needs_seq or p.phase is not p.stored_phase]
        if not changed:
            return
        by_use_case: dict[str, list[OpenPrediction]] = defaultdict(list)
        for pred in changed:
            if pred.needs_seq:
                by_use_case[pred.use_case].append(pred)
        for use_case, needing in sorted(by_use_case.items()):
            for pred, seq in zip(needing, await reserve_seqs(self.conn, use_case, len(needing)), strict=True):
                pred.seq = seq
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

    async def flush(self) -> None:
        """Merge what the unit counted into the stats and model-quality tables."""
        await stats.merge_all(self.conn, [*stats.merges_of(self.stats), *quality.merges_of(self.quality)])

    def _row_values(self, pred: OpenPrediction) -> dict[str, Any]:
        label = pred.current
        return {
            "prediction_id": pred.prediction_id,
            "phase": pred.phase.value,
            "deadline": next_deadline(pred),
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
            "policy": self.policies.use_cases[pred.use_case].digest,
        }
