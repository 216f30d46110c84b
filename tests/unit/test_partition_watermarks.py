"""Kafka-mode watermarks: per partition, then the slowest of all (shared/label-semantics.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.core.windows import PartitionProgress, WatermarkState, combined_watermark, partition_watermark

NOW = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
DISORDER = timedelta(seconds=5)
IDLE = timedelta(seconds=5)
OWNER = timedelta(seconds=15)
EARLY = datetime(2026, 11, 2, 12, 1, tzinfo=UTC)


def watermark(progress: PartitionProgress) -> datetime | None:
    return partition_watermark(progress, NOW, DISORDER, IDLE, OWNER)


def progress(
    max_event: datetime | None, last_arrival: datetime | None, caught_up: bool, reported: datetime | None
) -> PartitionProgress:
    return PartitionProgress(WatermarkState(max_event, last_arrival), caught_up, reported)


def test_lagging_partition_keeps_its_event_time() -> None:
    lagging = progress(EARLY, NOW - timedelta(minutes=1), caught_up=False, reported=NOW)
    assert watermark(lagging) == EARLY - DISORDER


def test_idle_partition_follows_the_wall_clock() -> None:
    idle = progress(EARLY, NOW - IDLE, caught_up=True, reported=NOW)
    assert watermark(idle) == NOW - DISORDER


def test_caught_up_but_recently_active_is_not_idle() -> None:
    active = progress(EARLY, NOW - timedelta(seconds=1), caught_up=True, reported=NOW)
    assert watermark(active) == EARLY - DISORDER


def test_partition_whose_owner_stopped_reporting_is_never_idle() -> None:
    orphaned = progress(EARLY, NOW - timedelta(hours=1), caught_up=True, reported=NOW - OWNER - timedelta(seconds=1))
    assert watermark(orphaned) == EARLY - DISORDER


def test_partition_never_read_has_no_watermark() -> None:
    assert watermark(progress(None, None, caught_up=False, reported=None)) is None


def test_empty_partition_read_to_its_end_is_idle() -> None:
    assert watermark(progress(None, None, caught_up=True, reported=NOW)) == NOW - DISORDER


def test_read_order_cannot_close_a_window_early() -> None:
    """The predictions partition read far ahead (Q served 14:00) while the events partition still
    holds P's click of 12:01 unread: the combined watermark stays at the events partition."""
    predictions = progress(datetime(2026, 11, 2, 14, 0, tzinfo=UTC), NOW, caught_up=True, reported=NOW)
    events = progress(EARLY, NOW, caught_up=False, reported=NOW)
    assert combined_watermark([watermark(predictions), watermark(events)]) == EARLY - DISORDER


def test_combined_needs_every_partition() -> None:
    assert combined_watermark([]) is None
    assert combined_watermark([EARLY, None]) is None
    assert combined_watermark([NOW, EARLY]) == EARLY


def test_idle_partition_stops_at_its_owners_last_report() -> None:
    """An owner killed just after saying "caught up" says nothing of what was produced since: the
    partition must not follow the wall clock past that report (or a click produced meanwhile
    would find its window closed: a fake negative)."""
    last_report = NOW - timedelta(seconds=3)
    silent = progress(EARLY, last_report - IDLE, caught_up=True, reported=last_report)
    assert watermark(silent) == last_report - DISORDER
