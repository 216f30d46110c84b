"""The API in Kafka mode while its broker goes away and comes back: a clear 503 within the produce
timeout and /readyz failing, then 202 again, without restarting the app.

The broker is this test's own (a fixed port, so it can come back on the same address). Its
storage is memory only: after the restart the topics are created again, as persistent storage
would have kept them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.config import Settings
from service.kafka.topics import ensure_topics
from tests.kafka.broker import Broker, free_port
from tests.kafka.conftest import kafka_settings_for
from tests.kafka.processes import read_topic

PRODUCE_TIMEOUT_S = 3.0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(port=free_port(), log_dir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def event(n: int) -> dict[str, str]:
    return {"event_id": f"outage-{n}", "prediction_id": f"P{n}", "type": "click"}


async def test_broker_outage_answers_503_then_recovers(
    own_broker: Broker, pg_url: str, pg_engine: AsyncEngine, kafka_policies: Path
) -> None:
    settings: Settings = kafka_settings_for(
        own_broker.bootstrap, pg_url, kafka_policies, kafka_produce_timeout=timedelta(seconds=PRODUCE_TIMEOUT_S)
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://labelloop.test") as client,
    ):
        response = await client.post("/v1/events", json=event(0))
        assert response.status_code == 202, response.text
        assert (await client.get("/readyz")).status_code == 200

        own_broker.stop()
        ready = await client.get("/readyz")  # no write needed to notice: a metadata probe
        assert ready.status_code == 503, ready.text
        assert ready.json()["detail"][0]["field"] == "kafka"
        for n in (1, 2):  # the first answer after the loss, and one from the rebuilt producer
            started = time.monotonic()
            response = await client.post("/v1/events", json=event(n))
            elapsed = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert elapsed < PRODUCE_TIMEOUT_S + 2, f"503 after {elapsed:.1f} s"
            assert response.headers["retry-after"].isdigit()
            assert response.headers["content-type"] == "application/json"
            problem = response.json()
            assert problem["error"] == "broker_unavailable"
            assert problem["detail"][0]["field"] == "kafka"
            assert "retry" in problem["detail"][0]["msg"]

        own_broker.start()  # the same port
        await ensure_topics(settings)
        deadline = time.monotonic() + 30
        answers = []
        while True:
            response = await client.post("/v1/events", json=event(3))
            answers.append(response.status_code)
            if response.status_code == 202:
                break
            assert response.status_code == 503, response.text
            assert time.monotonic() < deadline, f"no 202 within 30 s of the broker's return: {answers}"
            await asyncio.sleep(0.5)
        assert response.json() == {"accepted": 1, "duplicates": None}
        assert (await client.get("/readyz")).status_code == 200

    # Acknowledged means in the topic: the event accepted after the restart is there.
    (message,) = await read_topic(own_broker.bootstrap, settings.kafka_events_topic, 1)
    assert orjson.loads(message.value)["event_id"] == "outage-3"
    assert message.key == b"P3"
