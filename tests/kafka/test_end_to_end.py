"""HTTP in, Kafka through, labels out of the dataset endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from service.config import Settings
from tests.kafka.conftest import running_joiner


async def wait_for_rows(client: httpx.AsyncClient, count: int, **params: Any) -> list[dict[str, Any]]:
    """Poll the dataset (for at most 40 s) until it holds `count` rows."""
    deadline = time.monotonic() + 40
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        response = await client.get("/v1/datasets/recsys", params=params)
        rows = [json.loads(line) for line in response.text.splitlines()]
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.3)
    raise AssertionError(f"{len(rows)} rows after 40 s, expected {count}: {rows}")


async def test_http_to_kafka_to_labels(kafka_client: httpx.AsyncClient, kafka_settings: Settings) -> None:
    now = datetime.now(UTC)
    predictions = [
        {"prediction_id": f"P{i}", "use_case": "recsys", "served_at": (now + timedelta(milliseconds=i)).isoformat()}
        for i in range(20)
    ]
    response = await kafka_client.post("/v1/predictions", json={"predictions": predictions})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 20, "duplicates": None}
    clicks = [
        {
            "event_id": f"E{i}",
            "prediction_id": f"P{i}",
            "type": "click",
            "occurred_at": (now + timedelta(seconds=1)).isoformat(),
        }
        for i in range(0, 20, 2)
    ]
    assert (await kafka_client.post("/v1/events", json={"events": clicks})).status_code == 202

    async with running_joiner(kafka_settings):
        rows = await wait_for_rows(kafka_client, 20, final_only="true")
    assert sorted((r["prediction_id"], r["label"], r["label_kind"]) for r in rows) == sorted(
        (f"P{i}", 1, "behavioral") if i % 2 == 0 else (f"P{i}", 0, "implicit_negative") for i in range(20)
    )
    lineage = (await kafka_client.get("/v1/predictions/P0")).json()
    assert [e["disposition"] for e in lineage["events"]] == ["counted"]


async def messages_in(settings: Settings, topic: str) -> int:
    """How many messages a topic holds, read from the beginning of every partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes the metadata partitions_for_topic reads
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        assert partitions, f"no metadata for {topic}"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        count = 0
        for _ in range(3):  # a few fetch rounds: empty partitions answer with nothing
            batch = await consumer.getmany(timeout_ms=300)
            count += sum(len(messages) for messages in batch.values())
        return count
    finally:
        await consumer.stop()


async def test_validation_happens_before_producing(kafka_client: httpx.AsyncClient, kafka_settings: Settings) -> None:
    bad = await kafka_client.post("/v1/events", json={"event_id": "E", "prediction_id": "P", "type": "clack"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "type"
    unknown = await kafka_client.post(
        "/v1/predictions",
        json={
            "predictions": [{"prediction_id": "A", "use_case": "recsys"}, {"prediction_id": "B", "use_case": "nope"}]
        },
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["field"] == "predictions[1].use_case"
    assert await messages_in(kafka_settings, kafka_settings.kafka_predictions_topic) == 0
    assert await messages_in(kafka_settings, kafka_settings.kafka_events_topic) == 0
    good = await kafka_client.post("/v1/predictions", json={"prediction_id": "A", "use_case": "recsys"})
    assert good.status_code == 202
    assert await messages_in(kafka_settings, kafka_settings.kafka_predictions_topic) == 1
