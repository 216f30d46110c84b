"""Windows, phases, event timing and the watermark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.core.model import Disposition, Phase
from service.core.policy import BUNDLED_POLICIES, UseCasePolicy, load_policies
from service.core.windows import (
    Deadlines,
    WatermarkState,
    deadlines,
    effective_watermark,
    event_timing,
    observe,
    phase_at,
)

SERVED = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
W = SERVED + timedelta(minutes=10)
S = W + timedelta(hours=1)
TICK = timedelta(microseconds=1)
POLICIES = load_policies(BUNDLED_POLICIES)
RECSYS = POLICIES.use_cases["recsys"]
RECSYS_DEADLINES = Deadlines(window_end=W, seal_at=S)
DISORDER = timedelta(seconds=5)
IDLE = timedelta(seconds=5)


def hm(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 2, hour, minute, second, tzinfo=UTC)


def variant(base: UseCasePolicy, **changes: Any) -> UseCasePolicy:
    return UseCasePolicy.model_validate({**base.model_dump(), **changes})


IGNORE = variant(RECSYS, late_policy="ignore")


# --- deadlines ------------------------------------------------------------------------------------


def test_deadlines_revise() -> None:
    assert deadlines(RECSYS, SERVED) == Deadlines(window_end=hm(12, 10), seal_at=hm(13, 10))


def test_deadlines_ignore_seals_at_window_end() -> None:
    assert deadlines(IGNORE, SERVED) == Deadlines(window_end=hm(12, 10), seal_at=hm(12, 10))


def test_deadlines_regression_without_lateness() -> None:
    eta = POLICIES.use_cases["eta"]
    assert deadlines(eta, SERVED) == Deadlines(window_end=hm(18, 0), seal_at=hm(18, 0))


def test_deadlines_fraud_90_days() -> None:
    d = deadlines(POLICIES.use_cases["fraud"], SERVED)
    assert d.window_end == SERVED + timedelta(days=90)
    assert d.seal_at == d.window_end


# --- phases ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("watermark", "phase"),
    [
        (None, Phase.OPEN),
        (SERVED - timedelta(days=1), Phase.OPEN),
        (W - TICK, Phase.OPEN),
        (W, Phase.CLOSED),
        (W + TICK, Phase.CLOSED),
        (S - TICK, Phase.CLOSED),
        (S, Phase.FINAL),
        (S + timedelta(days=1), Phase.FINAL),
    ],
)
def test_phase_at_revise(watermark: datetime | None, phase: Phase) -> None:
    assert phase_at(RECSYS_DEADLINES, watermark) is phase


@pytest.mark.parametrize(
    ("watermark", "phase"),
    [(None, Phase.OPEN), (W - TICK, Phase.OPEN), (W, Phase.FINAL), (W + timedelta(minutes=10), Phase.FINAL)],
)
def test_phase_at_ignore_skips_closed(watermark: datetime | None, phase: Phase) -> None:
    assert phase_at(deadlines(IGNORE, SERVED), watermark) is phase


# --- event timing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [Phase.OPEN, Phase.CLOSED])
@pytest.mark.parametrize(
    "occurred_at",
    [SERVED - timedelta(seconds=10), SERVED, hm(12, 3), W, hm(12, 12), S - TICK, S],
)
def test_event_counted_until_seal_inclusive(phase: Phase, occurred_at: datetime) -> None:
    assert event_timing(RECSYS_DEADLINES, occurred_at, phase) is Disposition.COUNTED


@pytest.mark.parametrize("phase", [Phase.OPEN, Phase.CLOSED])
@pytest.mark.parametrize("occurred_at", [S + TICK, S + timedelta(days=1)])
def test_event_after_seal_too_late(phase: Phase, occurred_at: datetime) -> None:
    assert event_timing(RECSYS_DEADLINES, occurred_at, phase) is Disposition.TOO_LATE


@pytest.mark.parametrize("occurred_at", [SERVED, hm(12, 3), W, S])
def test_event_too_late_once_final(occurred_at: datetime) -> None:
    assert event_timing(RECSYS_DEADLINES, occurred_at, Phase.FINAL) is Disposition.TOO_LATE


def test_timeline_case_3_click_revises_before_seal() -> None:
    # Click that occurred 12:12 arrives while wm is 12:40 (< S): counted.
    phase = phase_at(RECSYS_DEADLINES, hm(12, 40))
    assert phase is Phase.CLOSED
    assert event_timing(RECSYS_DEADLINES, hm(12, 12), phase) is Disposition.COUNTED


def test_timeline_case_4_click_after_seal_is_too_late() -> None:
    # Click that occurred 12:03 arrives while wm is 14:00 (> S): too late although it occurred in the window.
    phase = phase_at(RECSYS_DEADLINES, hm(14, 0))
    assert phase is Phase.FINAL
    assert event_timing(RECSYS_DEADLINES, hm(12, 3), phase) is Disposition.TOO_LATE


def test_timeline_case_11_ignore_policy() -> None:
    # late_policy ignore: click that occurred 12:05 arrives while wm is 12:20: too late, final at 12:10.
    d = deadlines(IGNORE, SERVED)
    phase = phase_at(d, hm(12, 20))
    assert phase is Phase.FINAL
    assert phase_at(d, hm(12, 10)) is Phase.FINAL
    assert event_timing(d, hm(12, 5), phase) is Disposition.TOO_LATE
    assert event_timing(d, hm(12, 5), phase_at(d, hm(12, 9))) is Disposition.COUNTED


# --- observe --------------------------------------------------------------------------------------


def test_observe_from_empty_state() -> None:
    now = hm(12, 1)
    state = observe(WatermarkState(), [hm(12, 0, 30), hm(12, 0, 10)], now)
    assert state == WatermarkState(max_event_time=hm(12, 0, 30), last_arrival_at=now)


def test_observe_nothing_leaves_state_alone() -> None:
    state = WatermarkState(max_event_time=hm(12, 0), last_arrival_at=hm(12, 1))
    assert observe(state, [], hm(13, 0)) == state
    assert observe(WatermarkState(), [], hm(13, 0)) == WatermarkState()


def test_observe_caps_event_times_at_wall_clock() -> None:
    now = hm(12, 0)
    state = observe(WatermarkState(), [now + timedelta(hours=3)], now)
    assert state.max_event_time == now
    assert state.last_arrival_at == now


def test_observe_caps_against_existing_max() -> None:
    state = WatermarkState(max_event_time=hm(11, 0), last_arrival_at=hm(11, 0))
    state = observe(state, [hm(15, 0)], hm(12, 0))
    assert state.max_event_time == hm(12, 0)


def test_observe_never_moves_max_backwards() -> None:
    state = WatermarkState(max_event_time=hm(12, 30), last_arrival_at=hm(12, 31))
    later = observe(state, [hm(12, 10), hm(12, 20)], hm(12, 32))
    assert later.max_event_time == hm(12, 30)
    assert later.last_arrival_at == hm(12, 32)  # the arrival is still recorded


def test_observe_advances_max() -> None:
    state = WatermarkState(max_event_time=hm(12, 30), last_arrival_at=hm(12, 31))
    later = observe(state, [hm(12, 10), hm(12, 31, 30)], hm(12, 32))
    assert later.max_event_time == hm(12, 31, 30)


def test_observe_backfill_does_not_regress_watermark() -> None:
    state = WatermarkState()
    state = observe(state, [hm(14, 0)], hm(14, 0, 1))
    for minute in range(0, 60, 5):
        state = observe(state, [hm(12, minute)], hm(14, 1))
    assert state.max_event_time == hm(14, 0)


# --- effective watermark --------------------------------------------------------------------------


def test_watermark_follows_events_while_arrivals_are_recent() -> None:
    state = WatermarkState(max_event_time=hm(12, 30), last_arrival_at=hm(12, 31))
    # The wall clock is far ahead (a backfill), but arrivals are recent: events decide.
    assert effective_watermark(state, hm(12, 31, 4), DISORDER, IDLE) == hm(12, 29, 55)
    assert effective_watermark(state, hm(12, 31) + IDLE - TICK, DISORDER, IDLE) == hm(12, 29, 55)


def test_watermark_uses_wall_clock_after_idle_timeout() -> None:
    state = WatermarkState(max_event_time=hm(12, 30), last_arrival_at=hm(12, 31))
    at_timeout = hm(12, 31) + IDLE
    assert effective_watermark(state, at_timeout, DISORDER, IDLE) == at_timeout - DISORDER
    assert effective_watermark(state, hm(14, 0), DISORDER, IDLE) == hm(13, 59, 55)


def test_watermark_idle_timeout_is_its_own_parameter() -> None:
    state = WatermarkState(max_event_time=hm(12, 0), last_arrival_at=hm(12, 0))
    now = hm(12, 0, 30)
    assert effective_watermark(state, now, DISORDER, timedelta(minutes=1)) == hm(11, 59, 55)
    assert effective_watermark(state, now, DISORDER, timedelta(seconds=30)) == hm(12, 0, 25)


def test_watermark_never_below_event_watermark() -> None:
    # A wall clock behind the newest event (e.g. it was set back) never lowers the watermark.
    state = WatermarkState(max_event_time=hm(13, 0), last_arrival_at=hm(12, 0))
    assert effective_watermark(state, hm(12, 30), DISORDER, IDLE) == hm(12, 59, 55)


def test_watermark_of_empty_state_is_wall_clock() -> None:
    assert effective_watermark(WatermarkState(), hm(12, 0), DISORDER, IDLE) == hm(11, 59, 55)


def test_watermark_with_events_but_no_arrival_time_counts_as_idle() -> None:
    state = WatermarkState(max_event_time=hm(12, 0), last_arrival_at=None)
    assert effective_watermark(state, hm(12, 0, 1), DISORDER, IDLE) == hm(11, 59, 56)
    assert effective_watermark(state, hm(11, 0), DISORDER, IDLE) == hm(11, 59, 55)


def test_watermark_closes_window_only_via_events_or_idleness() -> None:
    """Case 2 with the watermark: P served 12:00 closes when event time passes 12:10:05, or by clock when idle."""
    d = RECSYS_DEADLINES
    state = observe(WatermarkState(), [hm(12, 10, 4)], hm(12, 10, 4))
    assert phase_at(d, effective_watermark(state, hm(12, 10, 4), DISORDER, IDLE)) is Phase.OPEN
    state = observe(state, [hm(12, 10, 5)], hm(12, 10, 5))
    assert phase_at(d, effective_watermark(state, hm(12, 10, 5), DISORDER, IDLE)) is Phase.CLOSED
    # Alternatively the last arrival (event 12:09) is followed by silence: the clock stands in once idle and
    # closes W when it reaches W + disorder.
    quiet = observe(WatermarkState(), [hm(12, 9)], hm(12, 9))
    assert effective_watermark(quiet, hm(12, 9, 4), DISORDER, IDLE) == hm(12, 8, 55)  # not idle yet
    assert effective_watermark(quiet, hm(12, 9, 5), DISORDER, IDLE) == hm(12, 9)  # idle: the clock
    assert phase_at(d, effective_watermark(quiet, hm(12, 10, 5) - TICK, DISORDER, IDLE)) is Phase.OPEN
    assert phase_at(d, effective_watermark(quiet, hm(12, 10, 5), DISORDER, IDLE)) is Phase.CLOSED


def test_disorder_zero() -> None:
    state = WatermarkState(max_event_time=hm(12, 30), last_arrival_at=hm(12, 30))
    assert effective_watermark(state, hm(12, 30, 1), timedelta(0), IDLE) == hm(12, 30)
