"""What one API process holds: settings, policies, the database and its telemetry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from service.api.sinks import Receipt, Sink
from service.api.telemetry import Telemetry
from service.config import Settings
from service.core.model import EventRecord, PredictionRecord
from service.core.policy import PolicySet
from service.core.windows import combined_watermark, partition_watermark
from service.store import queries, watermarks
from service.store.database import Database
from service.store.ingest import LabelContext, UnitResult, ingest, tick

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    settings: Settings
    policies: PolicySet
    db: Database
    clock: Clock = utcnow
    telemetry: Telemetry = field(default_factory=Telemetry)
    sink: Sink = field(init=False)

    def __post_init__(self) -> None:
        self.sink = EmbeddedSink(self)

    @property
    def context(self) -> LabelContext:
        return LabelContext(
            policies=self.policies,
            allowed_disorder=self.settings.allowed_disorder,
            idle_timeout=self.settings.idle_timeout,
            orphan_ttl=self.settings.orphan_ttl,
            owner_timeout=self.settings.kafka_owner_timeout,
            sweep_limit=self.settings.sweep_limit,
        )

    def committed(self, unit: UnitResult) -> None:
        """Telemetry for a unit of work, counted only once its transaction committed."""
        self.telemetry.apply(unit.stats)
        if unit.watermark is not None:
            self.telemetry.watermark_lag.set((self.clock() - unit.watermark).total_seconds())

    async def tick(self) -> UnitResult:
        """Close every window the watermark passed: a backlog beyond the sweep limit in several
        transactions, writers getting their turn between them."""
        while True:
            async with self.db.write() as conn:
                unit = await tick(conn, self.context, self.clock())
            self.committed(unit)
            if not unit.more_due:
                return unit

    async def refresh_gauges(self) -> None:
        """Gauges read from the store at scrape time: they hold for every process writing to it."""
        topics = (self.settings.kafka_predictions_topic, self.settings.kafka_events_topic)
        async with self.db.read() as conn:
            pending = await queries.pending_by_use_case(conn)
            dead_letters = await queries.dead_letters(conn)
            partitions = await watermarks.load_all(conn) if self.settings.kafka_mode else {}
        for use_case, count in pending.items():
            self.telemetry.pending.labels(use_case).set(count)
        self.telemetry.dead_letters.set(dead_letters)
        if partitions:
            now = self.clock()
            ctx = self.context
            watermark = combined_watermark(
                [
                    partition_watermark(p, now, ctx.allowed_disorder, ctx.idle_timeout, ctx.owner_timeout)
                    for name, p in partitions.items()
                    if name.rsplit(":", 1)[0] in topics
                ]
            )
            if watermark is not None:
                self.telemetry.watermark_lag.set((now - watermark).total_seconds())

    async def run_ticker(self) -> None:
        """Advance the idle watermark and close due windows, forever."""
        interval = self.settings.sweep_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:  # keep sweeping: one failed tick must not stop window closing
                log.exception("window sweep failed; retrying in %.1f s", interval)


class EmbeddedSink:
    """Records applied to the store in the request's own transaction."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def put_predictions(self, records: Sequence[PredictionRecord]) -> Receipt:
        async with self.runtime.db.write() as conn:
            unit = await ingest(conn, self.runtime.context, self.runtime.clock(), predictions=records)
        return self._committed(unit, "predictions", unit.predictions.accepted, unit.predictions.duplicates)

    async def put_events(self, records: Sequence[EventRecord]) -> Receipt:
        async with self.runtime.db.write() as conn:
            unit = await ingest(conn, self.runtime.context, self.runtime.clock(), events=records)
        return self._committed(unit, "events", unit.events.accepted, unit.events.duplicates)

    def _committed(self, unit: UnitResult, collection: str, accepted: int, duplicates: int) -> Receipt:
        # The transaction has committed: the 202 promises durable records.
        self.runtime.committed(unit)
        self.runtime.telemetry.record(collection, accepted, duplicates)
        return Receipt(accepted=accepted, duplicates=duplicates)
