"""`kill -9` of one of two joiners: its partitions are not idle, whatever its last report said.

Two `labelloop consume` processes share the group, every partition read to its end (so each
one's last report says "caught up"). One is killed. Right after, prediction X is produced to a
predictions partition the survivor owns, and 0.5 s after X's serving its click is produced to an
events partition the dead joiner owned: nobody reads that click until the group notices the death
(session timeout, 6 s) and hands the partition to the survivor.

Until then the dead joiner's partitions may follow the wall clock only up to its last report,
never past it: X's window (2 s, lateness 2 s) must stay open, so the click is counted when the
survivor finally reads it, and X is labeled 1 at revision 0, never an implicit negative first.
(The bug this guards against let them follow the clock until the owner timeout, 15 s: X became a
final implicit negative ~4 s after serving and the click was stored as too late.)

recsys under the short policy; partitions chosen from the assignments the joiners log, records
produced with an explicit partition."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.kafka.codec import encode
from tests.kafka.processes import (
    ConsumerProcess,
    click,
    consumer_processes,
    plain_producer,
    prediction,
    rows,
    scalar,
    send,
    wait_until,
)

X = "P-X"
CLICK = "E-X"


def last_assignment(consumer: ConsumerProcess) -> set[str]:
    """The partitions the consumer logged last as assigned ('topic:partition')."""
    found = consumer.assignments()
    return set(found[-1]) if found else set()


def partitions_of(assignment: set[str], topic: str) -> list[int]:
    return sorted(int(name.rsplit(":", 1)[1]) for name in assignment if name.rsplit(":", 1)[0] == topic)


async def test_killed_owner_partitions_do_not_follow_the_clock(
    kafka_settings: Settings, kafka_client: httpx.AsyncClient, pg_engine: AsyncEngine, tmp_path: Path
) -> None:
    s = kafka_settings.model_copy(update={"log_level": "info"})
    topics = (s.kafka_predictions_topic, s.kafka_events_topic)
    everything = {f"{t}:{p}" for t in topics for p in range(s.kafka_partitions)}

    with consumer_processes(tmp_path / "consumers") as pool:
        first = pool.start(s, "first")
        second = pool.start(s, "second")

        async def split_between_both() -> bool:
            a, b = last_assignment(first), last_assignment(second)
            return bool(a) and bool(b) and not a & b and a | b == everything

        await wait_until(split_between_both, 40, "both joiners own partitions", diagnose=pool.output())
        settled = datetime.now(UTC)
        await wait_until(
            lambda: _all_reported_caught_up(pg_engine, everything, settled),
            20,
            "every partition reported caught up after the split",
            diagnose=pool.output(),
        )
        doomed, survivor = first, second
        owned_by_doomed = last_assignment(doomed)
        survivor_predictions = partitions_of(last_assignment(survivor), s.kafka_predictions_topic)
        doomed_events = partitions_of(owned_by_doomed, s.kafka_events_topic)
        assert survivor_predictions, pool.output()
        assert doomed_events, pool.output()

        async with plain_producer(s.kafka_bootstrap_servers or "") as producer:
            assert await doomed.kill() == -9
            served = datetime.now(UTC)
            x = prediction(X, served)
            await send(producer, s.kafka_predictions_topic, [(X.encode(), encode(x), survivor_predictions[0])])
            clicked_at = served + timedelta(milliseconds=500)
            await asyncio.sleep(max(0.0, (clicked_at - datetime.now(UTC)).total_seconds()))
            clicked = click(CLICK, X, clicked_at)
            await send(producer, s.kafka_events_topic, [(X.encode(), encode(clicked), doomed_events[0])])
        # Nobody owns the click's partition yet: the group has not noticed the death.
        assert last_assignment(survivor) != everything, pool.output()

        async def settled_outcome() -> bool:
            found = await rows(
                pg_engine,
                "SELECT (SELECT label_status FROM predictions WHERE prediction_id = :x),"
                " (SELECT disposition FROM events WHERE event_id = :e)",
                x=X,
                e=CLICK,
            )
            status, disposition = found[0]
            return status == "final" and disposition is not None

        try:
            await wait_until(settled_outcome, 40, "X final and its click stored")
        except AssertionError as exc:
            raise AssertionError(f"{exc}{await _state(pg_engine)}\n{pool.output()}") from None
        # The group did rebalance: the survivor took over the dead joiner's partitions.
        assert last_assignment(survivor) == everything, pool.output()
        assert survivor.alive, survivor.output()
        assert "Traceback" not in survivor.output(), pool.output()

    found = await rows(
        pg_engine,
        "SELECT label::text, label_kind, label_status, revision FROM predictions WHERE prediction_id = :x",
        x=X,
    )
    history = await rows(
        pg_engine, "SELECT revision, kind, status FROM label_history WHERE prediction_id = :x ORDER BY id", x=X
    )
    disposition = await scalar(pg_engine, "SELECT disposition FROM events WHERE event_id = :e", e=CLICK)
    outcome = f"X: {found}, history: {history}, click: {disposition}"
    assert [tuple(r) for r in found] == [("1", "behavioral", "final", 0)], outcome
    assert "implicit_negative" not in {kind for _, kind, _ in history}, outcome
    assert {revision for revision, _, _ in history} == {0}, outcome
    assert disposition == "counted", outcome

    figures = (await kafka_client.get("/v1/metrics/feedback-loop", params={"use_case": "recsys"})).json()
    recsys = figures["use_cases"]["recsys"]
    assert recsys["revisions"] == 0, recsys
    assert recsys["late_events"] == 0, recsys
    assert recsys["labels_by_kind"]["behavioral"] == 1, recsys
    assert recsys["labels_by_kind"]["implicit_negative"] == 0, recsys


async def _all_reported_caught_up(engine: AsyncEngine, partitions: set[str], since: datetime) -> bool:
    """Every partition's owner has reported it read to its end since `since`."""
    found = await rows(engine, "SELECT name, caught_up, reported_at FROM watermarks")
    fresh = {name for name, caught_up, reported_at in found if caught_up and reported_at and reported_at >= since}
    return partitions <= fresh


async def _state(engine: AsyncEngine) -> str:
    predictions = await rows(engine, "SELECT prediction_id, phase, label::text, label_kind FROM predictions")
    events = await rows(engine, "SELECT event_id, disposition FROM events")
    watermarks = await rows(engine, "SELECT * FROM watermarks ORDER BY name")
    return f"predictions: {predictions}\nevents: {events}\nwatermarks: {watermarks}"
