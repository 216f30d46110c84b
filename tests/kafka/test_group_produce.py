"""Kafka mode: concurrent requests share one produce batch (group commit); a refused request fails
alone, and nothing of it reaches the topics."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI

from service.config import Settings


async def _topic_ids(settings: Settings, topics: dict[str, str], expected: int) -> set[str]:
    """The ids in the topics (topic -> id field), read from the start until `expected` arrived."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: set[str] = set()
    try:
        deadline = time.monotonic() + 20
        while len(found) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                found |= {orjson.loads(m.value)[topics[tp.topic]] for m in messages}
        await asyncio.sleep(0.5)  # anything more would arrive now
        for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
            found |= {orjson.loads(m.value)[topics[tp.topic]] for m in messages}
    finally:
        await consumer.stop()
    return found


async def test_a_refused_request_fails_alone_in_its_produce_batch(
    kafka_app: FastAPI, kafka_client: httpx.AsyncClient, kafka_settings: Settings
) -> None:
    group = kafka_app.state.runtime.sink._group
    bodies = [("/v1/predictions", {"prediction_id": f"P{i}", "use_case": "recsys"}) for i in range(5)]
    bodies += [("/v1/events", {"event_id": f"E{i}", "prediction_id": f"P{i}", "type": "click"}) for i in range(5)]
    bodies.insert(6, ("/v1/events", {"event_id": "BAD", "prediction_id": "P0", "type": "clack"}))
    async with group._turn:  # a commit under way: every request queues for the next one
        tasks = [asyncio.create_task(kafka_client.post(path, json=body)) for path, body in bodies]
        for _ in range(500):
            if len(group._queue) == len(bodies):
                break
            await asyncio.sleep(0.01)
        assert len(group._queue) == len(bodies)
    statuses = [r.status_code for r in await asyncio.gather(*tasks)]
    assert statuses == [202] * 6 + [422] + [202] * 4
    topics = {kafka_settings.kafka_predictions_topic: "prediction_id", kafka_settings.kafka_events_topic: "event_id"}
    found = await _topic_ids(kafka_settings, topics, expected=10)
    assert found == {f"P{i}" for i in range(5)} | {f"E{i}" for i in range(5)}
