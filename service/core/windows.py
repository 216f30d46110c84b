"""Event-time windows and the watermark that closes them.

A prediction's window ends at W = served_at + window and its label is sealed at S = W + seal delay.
The watermark is the highest event time seen minus the allowed disorder; only when nothing has
arrived for the idle timeout does the wall clock stand in for it. That stand-in is never stored,
so records arriving again (a backfill of old timestamps) are judged by their own event times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from service.core.model import Disposition, Phase
from service.core.policy import UseCasePolicy


@dataclass(frozen=True, slots=True)
class Deadlines:
    window_end: datetime
    seal_at: datetime


def deadlines(policy: UseCasePolicy, served_at: datetime) -> Deadlines:
    window_end = served_at + policy.window
    return Deadlines(window_end=window_end, seal_at=window_end + policy.seal_delay)


def phase_at(deadline: Deadlines, watermark: datetime | None) -> Phase:
    if watermark is None or watermark < deadline.window_end:
        return Phase.OPEN
    if watermark < deadline.seal_at:
        return Phase.CLOSED
    return Phase.FINAL


def event_timing(deadline: Deadlines, occurred_at: datetime, phase: Phase) -> Disposition:
    """An event counts when it occurred by the seal and its label is not final yet."""
    if phase is Phase.FINAL or occurred_at > deadline.seal_at:
        return Disposition.TOO_LATE
    return Disposition.COUNTED


@dataclass(frozen=True, slots=True)
class WatermarkState:
    max_event_time: datetime | None = None
    last_arrival_at: datetime | None = None


def observe(state: WatermarkState, event_times: list[datetime], now: datetime) -> WatermarkState:
    """Record arrivals. Event times ahead of the wall clock are capped at it, so one client with
    a skewed clock cannot close everybody's windows early."""
    if not event_times:
        return state
    newest = min(max(event_times), now)
    current = state.max_event_time
    return WatermarkState(
        max_event_time=newest if current is None or newest > current else current,
        last_arrival_at=now,
    )


def effective_watermark(
    state: WatermarkState, now: datetime, disorder: timedelta, idle_timeout: timedelta
) -> datetime | None:
    """The time up to which all events are taken to have arrived."""
    from_events = None if state.max_event_time is None else state.max_event_time - disorder
    idle = state.last_arrival_at is None or now - state.last_arrival_at >= idle_timeout
    if not idle:
        return from_events
    from_clock = now - disorder
    return from_clock if from_events is None or from_clock > from_events else from_events


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """What the consumer owning a topic-partition last reported about it."""

    state: WatermarkState
    caught_up: bool  # its position had reached the partition's end
    reported_at: datetime | None


def partition_watermark(
    progress: PartitionProgress,
    now: datetime,
    disorder: timedelta,
    idle_timeout: timedelta,
    owner_timeout: timedelta,
) -> datetime | None:
    """A partition follows the wall clock only when idle: its consumer, alive, had read to the end
    and nothing arrived for the idle timeout. Even then only up to the owner's last report: what
    was produced after it is unknown (its owner may have died since), so a partition never moves
    past what someone saw of it. Lag, a silent owner or a partition never read keep it at its own
    event time."""
    from_events = None if progress.state.max_event_time is None else progress.state.max_event_time - disorder
    reported_at = progress.reported_at
    if not progress.caught_up or reported_at is None or now - reported_at > owner_timeout:
        return from_events
    return effective_watermark(progress.state, reported_at, disorder, idle_timeout)


def combined_watermark(watermarks: list[datetime | None]) -> datetime | None:
    """Kafka orders nothing across partitions and topics: a window may close only when every
    partition has passed its end, so the slowest one decides (None while any has none)."""
    if not watermarks or any(w is None for w in watermarks):
        return None
    return min(w for w in watermarks if w is not None)
