"""`kill -9` of the only joiner while it works through a backlog, then a new process: the batch
in flight is replayed and every record is still applied exactly once.

The backlog is produced before any joiner runs: 8,000 predictions served now and clicks on every
other one 0.5 s after serving, read 1,000 records a batch. Every 100th message of each topic is
poison, so every batch has dead letters to produce between its database commit and its offset
commit (checkpoint steps 2, 3, 4): the test kills the joiner in that gap, on purpose."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from tests.kafka.broker import Broker
from tests.kafka.processes import (
    Outgoing,
    assert_exact_figures,
    click,
    consumer_processes,
    final_label_mix,
    header,
    history_problems,
    keyed,
    plain_producer,
    prediction,
    read_topic,
    rows,
    scalar,
    send,
    wait_until,
)

PREDICTIONS = 8000
CLICKS = PREDICTIONS // 2
POISON_EVERY = 100

Counts = Callable[[], Awaitable[tuple[int, int]]]


def with_poison(messages: list[Outgoing], poison: bytes) -> list[Outgoing]:
    """Every POISON_EVERY-th message followed by a poison one with the same key (same partition)."""
    mixed: list[Outgoing] = []
    for i, (key, value, partition) in enumerate(messages, 1):
        mixed.append((key, value, partition))
        if i % POISON_EVERY == 0:
            mixed.append((key, poison, partition))
    return mixed


async def committed_offsets(settings: Settings) -> dict[str, int]:
    """Per topic, the sum over partitions of the group's committed offsets (messages done)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=settings.kafka_group_id, enable_auto_commit=False
    )
    await consumer.start()  # no subscription: it never joins the group, it only reads its offsets
    try:
        totals = {}
        for topic in (settings.kafka_predictions_topic, settings.kafka_events_topic):
            offsets = [await consumer.committed(TopicPartition(topic, p)) for p in range(settings.kafka_partitions)]
            totals[topic] = sum(o or 0 for o in offsets)
        return totals
    finally:
        await consumer.stop()


async def test_sigkill_between_database_and_offset_commit_then_restart(
    kafka_settings: Settings,
    kafka_client: httpx.AsyncClient,
    pg_engine: AsyncEngine,
    broker: Broker,
    tmp_path: Path,
) -> None:
    s = kafka_settings.model_copy(update={"kafka_max_records": 1000})
    served = datetime.now(UTC)
    ids = [f"P{i}" for i in range(PREDICTIONS)]
    clicks = [click(f"E-{p}", p, served + timedelta(milliseconds=500)) for p in ids[::2]]
    poison_count = PREDICTIONS // POISON_EVERY + CLICKS // POISON_EVERY
    async with plain_producer(s.kafka_bootstrap_servers or "") as producer:
        predictions_out = with_poison(keyed([prediction(p, served) for p in ids]), b"not json {")
        await send(producer, s.kafka_predictions_topic, predictions_out)
        await send(producer, s.kafka_events_topic, with_poison(keyed(clicks), b"[]"))

    async def stored() -> tuple[int, int]:
        """(predictions, events) in the database."""
        found = await rows(pg_engine, "SELECT (SELECT count(*) FROM predictions), (SELECT count(*) FROM events)")
        return found[0][0], found[0][1]

    with consumer_processes(tmp_path / "consumers") as pool:
        doomed = pool.start(s, "doomed")
        await wait_until(lambda: _some(stored), 40, "the first batch committed", interval=0.02, diagnose=pool.output())
        # Hold the joiner's next batch at its first statement (a table lock), freeze the broker
        # (SIGSTOP), then let the batch commit to PostgreSQL: producing its dead letters now waits
        # for acks that cannot come, and its offset commit is never sent. Kill it right there.
        assert broker.process is not None
        async with pg_engine.connect() as lock:
            await lock.execute(text("LOCK TABLE watermarks IN ACCESS EXCLUSIVE MODE"))
            await wait_until(lambda: _joiner_waits_on_lock(pg_engine), 20, "the joiner held", diagnose=pool.output())
            held = await stored()
            broker.process.send_signal(signal.SIGSTOP)
            try:
                await lock.commit()
                await wait_until(lambda: _changed(stored, held), 20, "the held batch committed", interval=0.02)
                await asyncio.sleep(0.3)
                await doomed.kill()
            finally:
                broker.process.send_signal(signal.SIGCONT)
        at_kill = await stored()
        done = await committed_offsets(s)
        assert sum(at_kill) < PREDICTIONS + CLICKS, f"the kill came too late: {at_kill} stored"
        # The held batch is in the database but not in the committed offsets (which count the
        # poison messages too): the successor replays records already applied.
        assert sum(done.values()) < sum(at_kill), f"stored {at_kill}, committed {done}: nothing to replay"

        successor = pool.start(s, "successor")

        async def all_final() -> bool:
            return await scalar(pg_engine, "SELECT count(*) FROM predictions WHERE label_status = 'final'") == (
                PREDICTIONS
            )

        await wait_until(all_final, 60, "every prediction's label final", interval=0.5, diagnose=pool.output())
        assert "Traceback" not in successor.output(), pool.output()

    assert await scalar(pg_engine, "SELECT count(*) FROM predictions") == PREDICTIONS
    assert await scalar(pg_engine, "SELECT count(*) FROM events") == CLICKS
    assert await scalar(pg_engine, "SELECT count(*) FROM events WHERE disposition = 'counted'") == CLICKS
    assert await final_label_mix(pg_engine) == {("behavioral", 1): CLICKS, ("implicit_negative", 0): CLICKS}
    assert await history_problems(pg_engine) == []

    await assert_exact_figures(kafka_client, PREDICTIONS, CLICKS)
    finalized = await scalar(pg_engine, "SELECT sum(value) FROM stat_counters WHERE name = 'finalized'")
    assert finalized == PREDICTIONS

    # Dead letters are at-least-once: every poison message is in the dead-letter topic, unchanged.
    def sources(messages: list[object]) -> set[str | None]:
        return {header(m, "labelloop-source") for m in messages}

    dead = await read_topic(
        s.kafka_bootstrap_servers or "", s.kafka_dlq_topic, lambda m: len(sources(m)) >= poison_count
    )
    assert len(sources(dead)) == poison_count
    assert {m.value for m in dead} == {b"not json {", b"[]"}
    # The dead-letter count is exact: the replayed batch's poison messages are recorded once.
    assert await scalar(pg_engine, "SELECT count(*) FROM dead_letters") == poison_count


async def _some(stored: Counts) -> bool:
    predictions, events = await stored()
    return predictions + events > 0


async def _changed(stored: Counts, before: tuple[int, int]) -> bool:
    return await stored() != before


async def _joiner_waits_on_lock(engine: AsyncEngine) -> bool:
    waiting: int = await scalar(
        engine,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'labelloop-joiner' AND wait_event_type = 'Lock'",
    )
    return waiting > 0
