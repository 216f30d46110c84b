"""Partitions read in step by event time: what waits, what is applied, what is fetched next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumers.sync import InStep

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fetched(*seconds: float | None) -> list[tuple[datetime | None, str]]:
    return [(None if s is None else at(s), f"r{s}") for s in seconds]


def test_everything_is_applied_when_every_partition_is_read_to_its_end() -> None:
    step: InStep[str, str] = InStep()
    step.add("predictions", fetched(1, 2))
    step.add("events", fetched(50, 60))
    assert step.take(unread=[]) == {"predictions": ["r1", "r2"], "events": ["r50", "r60"]}
    assert step.waiting("events") == 0


def test_records_ahead_of_a_partition_with_unread_records_wait() -> None:
    step: InStep[str, str] = InStep()
    step.add("predictions", fetched(1, 2, 3))
    step.add("events", fetched(2, 3, 4, 5))
    assert step.take(unread=["predictions"]) == {"predictions": ["r1", "r2", "r3"], "events": ["r2", "r3"]}
    assert step.waiting("events") == 2
    step.add("predictions", fetched(4.5))
    assert step.take(unread=["predictions"]) == {"predictions": ["r4.5"], "events": ["r4"]}
    step.add("predictions", fetched(6))  # the last one: predictions are read to their end
    assert step.take(unread=[]) == {"predictions": ["r6"], "events": ["r5"]}


def test_the_horizon_is_the_least_reached_of_the_unread_partitions() -> None:
    step: InStep[str, str] = InStep()
    step.add("a", fetched(10))
    step.add("b", fetched(4))
    step.add("c", fetched(5, 8))
    # b has unread records and was read only up to 4: nothing later than 4 may go, c's 5 included.
    assert step.take(unread=["a", "b"]) == {"b": ["r4"]}
    assert (step.waiting("a"), step.waiting("c")) == (1, 2)


def test_nothing_with_an_event_time_goes_before_an_unread_partition_was_fetched_once() -> None:
    step: InStep[str, str] = InStep()
    step.add("events", fetched(None, 1))
    assert step.take(unread=["predictions"]) == {"events": ["rNone"]}  # undecodable: nothing to wait for
    assert step.waiting("events") == 1


def test_a_partition_is_applied_as_an_offset_prefix() -> None:
    step: InStep[str, str] = InStep()
    step.add("events", fetched(1, 9, 2, None))
    step.add("predictions", fetched(3))
    # 2 is within the horizon but follows 9: offsets commit as a prefix, so it waits behind it.
    assert step.take(unread=["predictions"])["events"] == ["r1"]
    assert step.waiting("events") == 3


def test_forgotten_partitions_are_read_again_from_scratch() -> None:
    step: InStep[str, str] = InStep()
    step.add("predictions", fetched(100))
    step.add("events", fetched(5))
    step.forget(["predictions", "events"])
    assert step.waiting("events") == 0
    step.add("events", fetched(5))
    # predictions' 100 is forgotten: as never fetched, it holds everything back.
    assert step.take(unread=["predictions"]) == {}
