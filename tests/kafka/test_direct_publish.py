"""Events published straight to the events topic, as another service would: a plain producer,
only the contract's fields (no received_at: the message timestamp stands in), sometimes on
another partition than their prediction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from tests.kafka.conftest import running_joiner
from tests.kafka.processes import (
    ConsumerProcess,
    consumer_processes,
    keyed,
    plain_producer,
    prediction,
    rows,
    scalar,
    send,
    wait_until,
)


def key_partition(key: str, partitions: int) -> int:
    """The partition a keyed message goes to (the Java client's and aiokafka's murmur2)."""
    partition: int = DefaultPartitioner()(key.encode(), list(range(partitions)), list(range(partitions)))
    return partition


def contract(**fields: Any) -> bytes:
    """An event exactly as another service writes it: the contract's fields, nothing labelloop adds."""
    return orjson.dumps(fields)


async def labels(engine: AsyncEngine) -> dict[str, tuple[Any, ...]]:
    found = await rows(engine, "SELECT prediction_id, label::text, label_kind, label_status, revision FROM predictions")
    return {pid: (None if label is None else int(label), kind, status, rev) for pid, label, kind, status, rev in found}


async def test_events_published_straight_to_the_topic_are_joined(
    kafka_settings: Settings, kafka_client: httpx.AsyncClient, pg_engine: AsyncEngine
) -> None:
    s = kafka_settings
    served = datetime.now(UTC)
    predictions = [
        {"prediction_id": f"D{i}", "use_case": "recsys", "served_at": served.isoformat(), "model": "ranker"}
        for i in range(6)
    ]
    response = await kafka_client.post("/v1/predictions", json={"predictions": predictions})
    assert response.status_code == 202, response.text

    at = (served + timedelta(milliseconds=500)).isoformat()
    other = (key_partition("D3", s.kafka_partitions) + 1) % s.kafka_partitions
    events = [  # (key, value, partition)
        (b"D0", contract(event_id="e0", prediction_id="D0", type="click", occurred_at=at), None),
        (
            b"D1",
            contract(schema_version=1, event_id="e1", prediction_id="D1", type="add_to_cart", occurred_at=at),
            None,
        ),
        (b"D2", contract(event_id="e2", prediction_id="D2", type="click"), None),  # occurred: when published
        (b"D3", contract(event_id="e3", prediction_id="D3", type="click", occurred_at=at), other),
        (
            b"D4",
            contract(
                event_id="e4", prediction_id="D4", type="rating", occurred_at=at, value=2, actor="u:7", payload={"a": 1}
            ),
            None,
        ),
    ]  # D5: nothing happens
    before = datetime.now(UTC)
    async with plain_producer(s.kafka_bootstrap_servers or "") as producer:
        sent = await send(producer, s.kafka_events_topic, events)
    after = datetime.now(UTC)
    assert sent[3].partition == other != key_partition("D3", s.kafka_partitions)

    async with running_joiner(s):

        async def all_final() -> bool:
            return await scalar(pg_engine, "SELECT count(*) FROM predictions WHERE label_status = 'final'") == 6

        await wait_until(all_final, 30, "every prediction's label final")

    assert await labels(pg_engine) == {
        "D0": (1, "behavioral", "final", 0),
        "D1": (1, "behavioral", "final", 0),
        "D2": (1, "behavioral", "final", 0),
        "D3": (1, "behavioral", "final", 0),
        "D4": (0, "explicit", "final", 0),  # 2 stars: below positive_at_least 4
        "D5": (0, "implicit_negative", "final", 0),
    }
    assert await scalar(pg_engine, "SELECT count(*) FROM events WHERE disposition = 'counted'") == 5

    # No received_at in the message: the message timestamp stands in, and for occurred_at too.
    d2 = (await kafka_client.get("/v1/predictions/D2")).json()
    (event,) = d2["events"]
    received = datetime.fromisoformat(event["received_at"])
    assert before - timedelta(seconds=1) <= received <= after + timedelta(seconds=1)
    assert event["occurred_at"] == event["received_at"]
    d4 = (await kafka_client.get("/v1/predictions/D4")).json()
    assert [(e["actor"], e["payload"], e["value"]) for e in d4["events"]] == [("u:7", {"a": 1}, 2)]

    figures = (await kafka_client.get("/v1/metrics/feedback-loop", params={"use_case": "recsys"})).json()
    recsys = figures["use_cases"]["recsys"]
    assert recsys["events"] == {"click": 3, "add_to_cart": 1, "rating": 1}
    assert recsys["revisions"] == 0


def assignment(consumer: ConsumerProcess) -> list[str]:
    found = consumer.assignments()
    return found[-1] if found else []


async def test_event_on_another_joiners_partition_is_rescued(
    kafka_settings: Settings, kafka_client: httpx.AsyncClient, pg_engine: AsyncEngine, tmp_path: Path
) -> None:
    """Two joiners. The prediction is on a partition of one, its event on a partition of the
    other, and their transactions overlap: the event's joiner decides "orphan" before the
    prediction is committed, the prediction's joiner looks for orphans before the event is. The
    orphan must still be joined (rescued once its prediction is committed), not left to expire."""
    s = kafka_settings
    with consumer_processes(tmp_path / "consumers") as pool:
        first, second = pool.start(s, "first"), pool.start(s, "second")

        async def split() -> bool:
            a, b = assignment(first), assignment(second)
            return bool(a) and bool(b) and len(a) + len(b) == 2 * s.kafka_partitions and not set(a) & set(b)

        await wait_until(split, 40, "two joiners sharing the partitions", diagnose=pool.output())
        # The prediction on a predictions partition of `first`, its event on an events partition of `second`.
        mine = [int(p.rsplit(":", 1)[1]) for p in assignment(first) if p.startswith(s.kafka_predictions_topic)]
        theirs = [int(p.rsplit(":", 1)[1]) for p in assignment(second) if p.startswith(s.kafka_events_topic)]
        pid = next(f"X{i}" for i in range(1000) if key_partition(f"X{i}", s.kafka_partitions) in mine)
        served = datetime.now(UTC)
        event = contract(
            event_id="ex", prediction_id=pid, type="click", occurred_at=(served + timedelta(seconds=1)).isoformat()
        )

        async with pg_engine.connect() as blocker, plain_producer(s.kafka_bootstrap_servers or "") as producer:
            # An uncommitted row with the event's id: the event's joiner, having found no
            # prediction, waits on the unique key when it inserts the event as an orphan.
            await blocker.execute(
                text(
                    "INSERT INTO events (event_id, prediction_id, type, occurred_at, content_hash, received_at,"
                    " disposition) VALUES ('ex', 'nobody', 'click', now(), 'x', now(), 'orphan')"
                )
            )
            await send(producer, s.kafka_events_topic, [(pid.encode(), event, theirs[0])])
            await wait_until(lambda: _joiner_waits(pg_engine), 20, "the event's joiner held", diagnose=pool.output())
            # Meanwhile the prediction's joiner stores the prediction: no orphan to join yet.
            await send(producer, s.kafka_predictions_topic, keyed([prediction(pid, served)]))
            await wait_until(lambda: _stored(pg_engine, pid), 20, "the prediction committed", diagnose=pool.output())
            await blocker.rollback()  # the event's joiner goes on: an orphan, whose prediction exists

        async def final() -> bool:
            return await scalar(pg_engine, "SELECT count(*) FROM predictions WHERE label_status = 'final'") == 1

        await wait_until(final, 30, "the label final", diagnose=pool.output())
        assert "Traceback" not in pool.output(), pool.output()

    assert await labels(pg_engine) == {pid: (1, "behavioral", "final", 0)}
    lineage = (await kafka_client.get(f"/v1/predictions/{pid}")).json()
    assert [(e["event_id"], e["disposition"]) for e in lineage["events"]] == [("ex", "counted")]
    figures = (await kafka_client.get("/v1/metrics/feedback-loop", params={"use_case": "recsys"})).json()
    assert figures["use_cases"]["recsys"]["events"] == {"click": 1}
    assert figures["use_cases"]["recsys"]["revisions"] == 0


async def _joiner_waits(engine: AsyncEngine) -> bool:
    waiting: int = await scalar(
        engine,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'labelloop-joiner' AND wait_event_type = 'Lock'",
    )
    return waiting > 0


async def _stored(engine: AsyncEngine, prediction_id: str) -> bool:
    n: int = await scalar(engine, "SELECT count(*) FROM predictions WHERE prediction_id = :p", p=prediction_id)
    return n == 1
