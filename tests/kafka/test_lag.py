"""Consumer lag never creates fake negatives.

With no joiner running, a backlog of 6 s of traffic is produced: 400 predictions served 15 ms
apart, starting 6 s ago, and clicks on every other one that occurred 1.9 s after its serving
(inside the 2 s window). Adversarial order: all predictions first, all clicks after, and the
clicks behind 16 MB of events whose predictions were never logged here (orphans, occurred at the
start). The broker hands that out 1 MB a partition per fetch, so the joiner is done with the
predictions topic (event time up to 6 s later) long before it reads a click. The joiner starts
only after another 6 s, when every window and its lateness (2 s + 2 s) are over on the wall clock.

A lagging partition keeps the watermark at its own event time, so no window may close before its
clicks were read: every clicked prediction is labeled 1 at revision 0, never negative first."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from tests.kafka.conftest import running_joiner
from tests.kafka.processes import (
    click,
    final_label_mix,
    history_problems,
    keyed,
    plain_producer,
    prediction,
    rows,
    scalar,
    send,
    wait_until,
)

PREDICTIONS = 400
CLICKS = PREDICTIONS // 2
ORPHANS = 2000
BLOB = "x" * 8000  # 16 MB of orphans ahead of the clicks


async def test_lagging_joiner_makes_no_fake_negatives(
    kafka_settings: Settings, kafka_client: httpx.AsyncClient, pg_engine: AsyncEngine
) -> None:
    # A short idle timeout: a partition read to its end counts as idle (the wall clock may stand in
    # for its event time) 200 ms after its last record, long before the lagging ones are read.
    s = kafka_settings.model_copy(update={"kafka_max_records": 100, "idle_timeout": timedelta(milliseconds=200)})
    start = datetime.now(UTC) - timedelta(seconds=6)
    served = {f"P{i}": start + i * timedelta(milliseconds=15) for i in range(PREDICTIONS)}
    ids = list(served)
    clicked = ids[::2]
    async with plain_producer(s.kafka_bootstrap_servers or "") as producer:
        await send(producer, s.kafka_predictions_topic, keyed([prediction(p, served[p]) for p in ids]))
        unlogged = [replace(click(f"E-U{i}", f"U{i}", start), payload={"blob": BLOB}) for i in range(ORPHANS)]
        await send(producer, s.kafka_events_topic, keyed(unlogged))
        clicks = [click(f"E-{p}", p, served[p] + timedelta(milliseconds=1900)) for p in clicked]
        await send(producer, s.kafka_events_topic, keyed(clicks))

    await asyncio.sleep(6)  # no joiner: on the wall clock every window and its lateness are over
    assert await scalar(pg_engine, "SELECT count(*) FROM predictions") == 0

    async with running_joiner(s) as joiner:

        async def all_final() -> bool:
            return await scalar(pg_engine, "SELECT count(*) FROM predictions WHERE label_status = 'final'") == (
                PREDICTIONS
            )

        await wait_until(all_final, 40, "every prediction's label final", interval=0.3)

        def consumer_lag() -> dict[tuple[str, str], float]:
            return {
                (sample.labels["topic"], sample.labels["partition"]): sample.value
                for family in joiner.metrics.registry.collect()
                if family.name == "labelloop_joiner_consumer_lag_records"
                for sample in family.samples
            }

        async def read_to_the_end() -> bool:
            return bool(consumer_lag()) and set(consumer_lag().values()) == {0.0}

        await wait_until(read_to_the_end, 20, "the joiner's consumer lag at 0", interval=0.3)
        assert {topic for topic, _ in consumer_lag()} == {s.kafka_predictions_topic, s.kafka_events_topic}

    assert await final_label_mix(pg_engine) == {("behavioral", 1): CLICKS, ("implicit_negative", 0): CLICKS}
    found = await rows(pg_engine, "SELECT prediction_id, label_kind, revision FROM predictions")
    labels = {pid: (label_kind, revision) for pid, label_kind, revision in found}
    assert {labels[p] for p in clicked} == {("behavioral", 0)}
    assert {labels[p] for p in ids[1::2]} == {("implicit_negative", 0)}
    # Never negative first: no clicked prediction has an implicit negative anywhere in its history.
    negatives_first = await scalar(
        pg_engine,
        "SELECT count(*) FROM label_history h JOIN events e ON e.prediction_id = h.prediction_id"
        " WHERE h.kind = 'implicit_negative'",
    )
    assert negatives_first == 0
    assert await history_problems(pg_engine) == []
    assert await scalar(pg_engine, "SELECT count(*) FROM events WHERE disposition = 'counted'") == CLICKS
    assert await scalar(pg_engine, "SELECT count(*) FROM events WHERE disposition = 'orphan'") == ORPHANS

    lineage = (await kafka_client.get(f"/v1/predictions/{clicked[0]}")).json()
    assert {(h["revision"], h["kind"], h["label"]) for h in lineage["history"]} == {(0, "behavioral", 1)}
    assert [e["disposition"] for e in lineage["events"]] == ["counted"]

    figures = (await kafka_client.get("/v1/metrics/feedback-loop", params={"use_case": "recsys"})).json()
    recsys = figures["use_cases"]["recsys"]
    assert recsys["revisions"] == 0
    assert recsys["label_changes"] == 0
    assert recsys["late_events"] == 0
    assert recsys["served"] == PREDICTIONS
    assert recsys["labels_by_kind"] == {"explicit": 0, "behavioral": CLICKS, "natural": 0, "implicit_negative": CLICKS}
    assert recsys["events"] == {"click": CLICKS}

    pipeline = (await kafka_client.get("/v1/metrics/pipeline")).json()
    assert pipeline["mode"] == "kafka"
    topics = {p["partition"].rsplit(":", 1)[0] for p in pipeline["partitions"]}
    assert topics == {s.kafka_predictions_topic, s.kafka_events_topic}
    assert pipeline["partitions_behind"] == 0
    assert pipeline["watermark"] is not None
