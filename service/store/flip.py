"""p_flip at read time: the use case's curve from the delay cohorts (service/store/advice.py),
recomputed at most every `refresh`, since the labels change with every event and the delay
distribution slowly; each row's wait measured at the watermark (event time, as the seal is)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.flip import FlipCurve, flip_curve
from service.core.policy import EventKind, UseCasePolicy
from service.store.advice import delay_cohorts


@dataclass(frozen=True, slots=True)
class Estimate:
    """p_flip of a provisional implicit negative from its served_at (None: not known yet)."""

    curve: FlipCurve | None
    watermark: datetime | None

    def __call__(self, served_at: datetime) -> float | None:
        if self.curve is None or self.watermark is None:
            return None
        return round(self.curve.p_flip((self.watermark - served_at).total_seconds()), 6)


@dataclass
class FlipCurves:
    refresh: timedelta
    clock: Callable[[], datetime]
    _cached: dict[str, tuple[datetime, FlipCurve | None]] = field(default_factory=dict)

    async def curve(
        self, conn: AsyncConnection, use_case: str, policy: UseCasePolicy, watermark: datetime | None
    ) -> FlipCurve | None:
        """Cohorts aged at the watermark: a backfill has shown no more of its delays than that."""
        now = self.clock()
        cached = self._cached.get(use_case)
        if cached is not None and now - cached[0] < self.refresh:
            return cached[1]
        positives = sorted(name for name, rule in policy.events.items() if rule.kind is EventKind.POSITIVE)
        curve = None
        if watermark is not None and positives and policy.on_window_close == "implicit_negative":
            cohorts = await delay_cohorts(conn, use_case, positives, watermark)
            curve = flip_curve(cohorts.values(), (policy.window + policy.seal_delay).total_seconds())
        self._cached[use_case] = (now, curve)
        return curve
