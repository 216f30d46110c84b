"""Load shedding through the HTTP API: once the requests waiting for a commit pass the bound, new
ones answer 503 with Retry-After at once, store nothing, and the waiting ones still succeed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.api.runtime import Runtime
from tests.api.test_bad_input import prediction
from tests.conftest import FakeClock, settings_for


@pytest.fixture
async def app(engine: AsyncEngine, migrated_url: str, clock: FakeClock, policies_file: Path) -> AsyncIterator[FastAPI]:
    app = create_app(settings_for(migrated_url, policies=policies_file, max_queued_records=2), clock=clock)
    async with app.router.lifespan_context(app):
        yield app


async def test_requests_past_the_queue_bound_are_shed(client: httpx.AsyncClient, runtime: Runtime) -> None:
    async with runtime.db.writing:  # the store is slow: the first commit cannot start
        committing = asyncio.create_task(client.post("/v1/predictions", json=prediction("committing")))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(client.post("/v1/predictions", json=prediction(f"q{i}"))) for i in range(2)]
        await asyncio.sleep(0.05)
        shed = await client.post("/v1/predictions", json=prediction("shed"))
        assert shed.status_code == 503, shed.text
        assert shed.headers["retry-after"] == "1"
        assert shed.json()["error"] == "overloaded"
        assert "2 records are waiting" in shed.json()["detail"][0]["msg"]
    assert (await committing).status_code == 202
    assert [(await q).status_code for q in queued] == [202, 202]
    assert (await client.get("/v1/predictions/shed")).status_code == 404
    assert (await client.post("/v1/predictions", json=prediction("later"))).status_code == 202
