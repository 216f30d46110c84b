"""Two `labelloop consume` processes in one group: one joins mid-stream, the other is stopped
mid-stream (SIGTERM). Every record is still applied exactly once.

recsys under the short policy (window 2 s, lateness 2 s). Every wave serves 400 predictions now
and, right after, clicks on every other one 0.5 s after its serving: well within the window, so
no label may ever be revised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from tests.kafka.processes import (
    ConsumerProcess,
    assert_exact_figures,
    click,
    consumer_processes,
    counters,
    final_label_mix,
    history_problems,
    keyed,
    plain_producer,
    prediction,
    scalar,
    send,
    wait_until,
)

WAVES = 5
PER_WAVE = 400
PREDICTIONS = WAVES * PER_WAVE
CLICKS = PREDICTIONS // 2


async def test_two_processes_join_and_leave_mid_stream(
    kafka_settings: Settings, kafka_client: httpx.AsyncClient, pg_engine: AsyncEngine, tmp_path: Path
) -> None:
    s = kafka_settings
    wave_no = 0

    async def wave(producer: AIOKafkaProducer) -> None:
        nonlocal wave_no
        served = datetime.now(UTC)
        ids = [f"P{wave_no}-{i}" for i in range(PER_WAVE)]
        await send(producer, s.kafka_predictions_topic, keyed([prediction(p, served) for p in ids]))
        clicks = [click(f"E-{p}", p, served + timedelta(milliseconds=500)) for p in ids[::2]]
        await send(producer, s.kafka_events_topic, keyed(clicks))
        wave_no += 1

    with consumer_processes(tmp_path / "consumers") as pool:
        first = pool.start(s, "first")
        await first.wait_for_log('"msg":"assigned ', within=30)
        async with plain_producer(s.kafka_bootstrap_servers or "") as producer:
            await wave(producer)
            await wave(producer)

            second = pool.start(s, "second")  # joins mid-stream: the group rebalances
            await wave(producer)
            await wait_until(
                lambda: _has_assignment(second), 30, "the second consumer got partitions", diagnose=pool.output()
            )
            await wave(producer)

            assert await first.terminate() == 0, first.output()  # leaves mid-stream
            await wave(producer)

        async def all_final() -> bool:
            return await scalar(pg_engine, "SELECT count(*) FROM predictions WHERE label_status = 'final'") == (
                PREDICTIONS
            )

        await wait_until(all_final, 45, "every prediction's label final", interval=0.5, diagnose=pool.output())
        assert second.alive, second.output()
        # The survivor ended up with all eight partitions of both topics.
        assert len(second.assignments()[-1]) == 2 * s.kafka_partitions, pool.output()
        assert "Traceback" not in pool.output(), pool.output()

    assert await scalar(pg_engine, "SELECT count(*) FROM predictions") == PREDICTIONS
    assert await scalar(pg_engine, "SELECT count(*) FROM events WHERE disposition = 'counted'") == CLICKS
    assert await final_label_mix(pg_engine) == {("behavioral", 1): CLICKS, ("implicit_negative", 0): CLICKS}
    assert await scalar(pg_engine, "SELECT max(revision) FROM predictions") == 0
    assert await history_problems(pg_engine) == []
    clicked = await scalar(
        pg_engine,
        "SELECT count(*) FROM predictions WHERE label_kind = 'behavioral'"
        " AND prediction_id IN (SELECT prediction_id FROM events)",
    )
    assert clicked == CLICKS

    recsys = await assert_exact_figures(kafka_client, PREDICTIONS, CLICKS)
    assert recsys["label_changes"] == 0
    assert recsys["late_events"] == 0
    totals = await counters(pg_engine)
    assert totals.get("finalized") == PREDICTIONS
    assert totals.get("dead_letters", 0) == 0


async def _has_assignment(consumer: ConsumerProcess) -> bool:
    return any(consumer.assignments())
