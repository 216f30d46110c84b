"""Kafka mode: a subject erased through the API while a joiner runs. What the joiner applied is
erased; what reaches it afterwards about an erased prediction (an event, a replayed prediction)
is dropped; the other subjects' labels are untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service.auth.keys import Scope
from service.config import Settings
from service.store import api_keys
from tests.kafka.conftest import running_joiner
from tests.kafka.processes import scalar, wait_until
from tests.kafka.test_crash import committed_offsets
from tests.kafka.test_end_to_end import wait_for_rows


async def test_erasure_while_a_joiner_runs(
    kafka_app: FastAPI, kafka_client: httpx.AsyncClient, kafka_settings: Settings, pg_engine: AsyncEngine
) -> None:
    async with pg_engine.begin() as conn:
        key = await api_keys.create(conn, "privacy", set(Scope), datetime.now(UTC))
    await kafka_app.state.runtime.guard.load()
    kafka_client.headers["Authorization"] = f"Bearer {key.token}"
    now = datetime.now(UTC)
    predictions = [
        {
            "prediction_id": f"P{i}",
            "use_case": "recsys",
            "served_at": (now + timedelta(milliseconds=i)).isoformat(),
            "subject_id": "alice" if i % 2 == 0 else "bob",
        }
        for i in range(10)
    ]
    clicks = [
        {
            "event_id": f"E{i}",
            "prediction_id": f"P{i}",
            "type": "click",
            "occurred_at": (now + timedelta(seconds=1)).isoformat(),
        }
        for i in range(10)
    ]
    assert (await kafka_client.post("/v1/predictions", json={"predictions": predictions})).status_code == 202
    assert (await kafka_client.post("/v1/events", json={"events": clicks})).status_code == 202

    async with running_joiner(kafka_settings):
        await wait_for_rows(kafka_client, 10, final_only="true")
        erased = await kafka_client.delete("/v1/subjects/alice")
        assert erased.status_code == 200, erased.text
        assert {k: erased.json()[k] for k in ("predictions", "events")} == {"predictions": 5, "events": 5}

        # After the erasure: a replayed prediction and a new event of alice's, then wait until the
        # joiner committed past them.
        again: dict[str, Any] = {**clicks[0], "event_id": "E0-again"}
        assert (await kafka_client.post("/v1/predictions", json=predictions[0])).status_code == 202
        assert (await kafka_client.post("/v1/events", json=again)).status_code == 202

        async def caught_up() -> bool:
            done = await committed_offsets(kafka_settings)
            return done == {kafka_settings.kafka_predictions_topic: 11, kafka_settings.kafka_events_topic: 11}

        await wait_until(caught_up, 30, "the joiner committed past the records sent after the erasure")

    rows = await wait_for_rows(kafka_client, 10)  # one row per prediction: bob's labels, alice's tombstones
    latest = {r["prediction_id"]: r for r in rows}
    assert {pid for pid, r in latest.items() if r["status"] == "erased"} == {f"P{i}" for i in range(0, 10, 2)}
    assert {(r["label"], r["status"]) for pid, r in latest.items() if int(pid[1:]) % 2} == {(1, "final")}
    assert await scalar(pg_engine, "SELECT count(*) FROM events WHERE prediction_id IN ('P0','P2','P4','P6','P8')") == 0
    assert await scalar(pg_engine, "SELECT count(*) FROM predictions WHERE subject_id = 'alice'") == 0
    assert (await kafka_client.get("/v1/predictions/P0")).status_code == 410
    assert await scalar(pg_engine, "SELECT count(*) FROM dead_letters") == 0  # the replay was a duplicate
