"""What one API process holds: settings, policies, the database and its telemetry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from service.api.telemetry import Telemetry
from service.config import Settings
from service.core.policy import PolicySet
from service.store import queries
from service.store.database import Database
from service.store.ingest import LabelContext, UnitResult, tick

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

    @property
    def context(self) -> LabelContext:
        return LabelContext(
            policies=self.policies,
            allowed_disorder=self.settings.allowed_disorder,
            idle_timeout=self.settings.idle_timeout,
            orphan_ttl=self.settings.orphan_ttl,
        )

    def committed(self, unit: UnitResult) -> None:
        """Telemetry for a unit of work, counted only once its transaction committed."""
        self.telemetry.apply(unit.stats)
        if unit.watermark is not None:
            self.telemetry.watermark_lag.set((self.clock() - unit.watermark).total_seconds())

    async def tick(self) -> UnitResult:
        async with self.db.write() as conn:
            unit = await tick(conn, self.context, self.clock())
        self.committed(unit)
        async with self.db.read() as conn:
            for use_case, pending in (await queries.pending_by_use_case(conn)).items():
                if use_case:
                    self.telemetry.pending.labels(use_case).set(pending)
        return unit

    async def run_ticker(self) -> None:
        """Advance the idle watermark and close due windows, forever."""
        interval = self.settings.sweep_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:  # keep sweeping: one failed tick must not stop window closing
                log.exception("window sweep failed; retrying in %.1f s", interval)
