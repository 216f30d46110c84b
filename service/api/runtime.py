"""What one API process holds: settings, policies, the database and its telemetry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from service.api.auth import Guard
from service.api.group_commit import GroupCommit, group_bounds
from service.api.sinks import Receipt, Sink
from service.api.telemetry import Telemetry
from service.clock import Clock, utcnow
from service.config import Settings
from service.core.model import EventRecord, PredictionRecord
from service.core.policy import PolicySet
from service.core.privacy import subject_forms
from service.log_once import RepeatingLog
from service.store import erasure, feedback, quality
from service.store.database import Database, failure_reason, store_fault
from service.store.flip import FlipCurves
from service.store.ingest import LabelContext, Submission, SubmissionResult, UnitResult, ingest
from service.store.records import Rejected
from service.store.state import OpenPredictions
from service.store.stats import served_hour

log = logging.getLogger(__name__)
# Model-quality gauges show a version's latest hour within this: one retired before is dropped.
QUALITY_GAUGE_HOURS = timedelta(days=7)


@dataclass
class Runtime:
    settings: Settings
    policies: PolicySet
    db: Database
    clock: Clock = utcnow
    telemetry: Telemetry = field(default_factory=Telemetry)
    context: LabelContext = field(init=False)
    sink: Sink = field(init=False)
    state: OpenPredictions = field(init=False)  # embedded mode: this process is the only writer
    guard: Guard = field(init=False)
    flip_curves: FlipCurves = field(init=False)
    write_fault: str | None = field(default=None, init=False)  # why the last unit of work failed, if the store's fault
    _sweep_log: RepeatingLog = field(default_factory=lambda: RepeatingLog(log), init=False)
    _purge_log: RepeatingLog = field(default_factory=lambda: RepeatingLog(log), init=False)

    def __post_init__(self) -> None:
        self.context = LabelContext.from_settings(self.settings, self.policies)
        self.state = OpenPredictions(self.settings.state_capacity)
        self.sink = EmbeddedSink(self)
        self.guard = Guard(self.settings, self.db)
        self.flip_curves = FlipCurves(self.settings.flip_refresh, self.clock)

    async def apply(self, submissions: Sequence[Submission] = ()) -> UnitResult:
        """One unit of work in its own transaction; the open predictions it touched are published
        to the state only once it committed."""
        async with self.db.writing:
            # After a fault a unit of work writes, even one with nothing to store: a commit that
            # wrote nothing (an idle sweep) would prove nothing, and /readyz would turn ready while
            # writes still fail (measured: a full disk, SQLite).
            probe = self.write_fault is not None
            try:
                async with self.db.writer.begin() as conn:
                    unit = await ingest(conn, self.context, self.clock(), submissions, self.state, probe=probe)
            except Rejected:
                raise  # rolled back before any commit: the state still matches the store
            except BaseException as exc:
                self.state.clear()  # a failed commit may or may not have reached the store
                self.write_fault = store_fault(exc) if isinstance(exc, Exception) else None
                raise
            self.write_fault = None
            self.state.publish(unit.predictions)  # before the next unit can check anything out
            self.state.watermark = unit.progress
            if unit.orphans_absent is not None:
                self.state.orphans_absent = unit.orphans_absent
        self.committed(unit)
        return unit

    def committed(self, unit: UnitResult) -> None:
        """Telemetry for a unit of work, counted only once its transaction committed."""
        self.telemetry.apply(unit.stats)
        if unit.watermark is not None:
            self.telemetry.watermark_lag.set((self.clock() - unit.watermark).total_seconds())

    async def tick(self) -> UnitResult:
        """Close every window the watermark passed: a backlog beyond the sweep limit in several
        transactions, writers getting their turn between them."""
        while True:
            unit = await self.apply()
            if not unit.more_due:
                return unit

    async def erase_subject(self, subject_id: str, by: str) -> erasure.Forgotten:
        """Erase a subject in one transaction, in this process's writer turn."""
        async with self.db.write() as conn:
            forgotten = await erasure.erase_subject(
                conn, subject_forms(subject_id, self.settings.hash_key), by, self.clock()
            )
            # The cached open predictions may hold some of the erased: forgotten with the rest, so
            # that the next unit of work reads the tombstones. (Erasures are rare; the cache refills.)
            self.state.clear()
        return forgotten

    async def purge(self, by: str) -> dict[str, erasure.Forgotten]:
        return await erasure.purge_expired(self.db, self.policies, self.clock(), by, self.settings.sweep_limit)

    async def run_purger(self) -> None:
        """Purge what retention let expire, every purge_interval, forever."""
        interval = self.settings.purge_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                purged = await self.purge(by=erasure.RETENTION)
            except Exception as exc:  # keep purging: the next round takes what this one could not
                self._purge_log.failed(
                    "purge", "retention purge failed, retrying every %.0f s: %s", interval, failure_reason(exc)
                )
                continue
            self._purge_log.recovered("purge", "retention purge works again")
            for use_case, gone in purged.items():
                if gone.predictions:
                    log.info("retention purged %d predictions of %s", gone.predictions, use_case)

    @property
    def watermark_times(self) -> feedback.WatermarkTimes:
        ctx = self.context
        return feedback.WatermarkTimes(ctx.allowed_disorder, ctx.idle_timeout, ctx.owner_timeout)

    async def refresh_gauges(self) -> None:
        """Gauges read from the store at scrape time: they hold for every process writing to it."""
        async with self.db.read() as conn:
            pending = await feedback.pending_by_use_case(conn)
            state = await feedback.pipeline(conn, self.clock(), self.watermark_times, self.settings.kafka_topics)
            tasks = {name: p.task for name, p in self.policies.use_cases.items() if p.output_path is not None}
            recent = served_hour(self.clock() - QUALITY_GAUGE_HOURS)
            self.telemetry.set_quality(await quality.latest(conn, tasks, recent))
        for use_case, count in pending.items():
            self.telemetry.pending.labels(use_case).set(count)
        self.telemetry.dead_letters.set(state["dead_letters"])
        # Embedded mode sets the lag as each unit of work commits.
        if state["mode"] == "kafka" and state["watermark_lag_s"] is not None:
            self.telemetry.watermark_lag.set(state["watermark_lag_s"])

    async def run_ticker(self) -> None:
        """Advance the idle watermark and close due windows, forever."""
        interval = self.settings.sweep_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception as exc:  # keep sweeping: one failed tick must not stop window closing
                reason = failure_reason(exc)
                self._sweep_log.failed("sweep", "window sweep failed, retrying every %.1f s: %s", interval, reason)
                log.debug("window sweep failed", exc_info=exc)
            else:
                self._sweep_log.recovered("sweep", "window sweep works again")


class EmbeddedSink:
    """Records applied to the store; concurrent requests share one transaction (group commit)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._group: GroupCommit[Submission, SubmissionResult] = GroupCommit(
            self._commit, size=lambda s: s.size, bounds=group_bounds(runtime.settings)
        )

    async def fault(self) -> str | None:
        return None  # the store is the sink: /readyz checks it

    async def put_predictions(self, records: Sequence[PredictionRecord]) -> Receipt:
        result = (await self._group.submit(Submission(predictions=records))).predictions
        self.runtime.telemetry.record("predictions", result.accepted, result.duplicates)
        return Receipt(accepted=result.accepted, duplicates=result.duplicates)

    async def put_events(self, records: Sequence[EventRecord]) -> Receipt:
        result = (await self._group.submit(Submission(events=records))).events
        self.runtime.telemetry.record("events", result.accepted, result.duplicates)
        return Receipt(accepted=result.accepted, duplicates=result.duplicates)

    async def _commit(self, submissions: list[Submission]) -> list[SubmissionResult | Exception]:
        """One transaction for the group. A submission the policies or the store refuse fails
        alone: the transaction is rolled back and the rest applied again without it."""
        refused: dict[int, Exception] = {}
        while True:
            kept = [i for i in range(len(submissions)) if i not in refused]
            if not kept:
                return [refused[i] for i in range(len(submissions))]
            try:
                unit = await self.runtime.apply([submissions[i] for i in kept])
            except Rejected as exc:
                refused[kept[exc.submission]] = exc.error
                continue
            # Committed: every 202 of the group promises durable records.
            applied = dict(zip(kept, unit.results, strict=True))
            return [applied[i] if i in applied else refused[i] for i in range(len(submissions))]
