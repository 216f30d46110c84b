"""A backlog of due windows closes over several short transactions, never in one long one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.api.runtime import Runtime
from tests.conftest import T0, FakeClock, settings_for
from tests.helpers import Timeline
from tests.kafka.processes import rows, scalar

LIMIT = 4


@pytest.fixture
async def limited_app(
    engine: AsyncEngine, migrated_url: str, clock: FakeClock, policies_file: Path
) -> AsyncIterator[FastAPI]:
    app = create_app(settings_for(migrated_url, policies=policies_file, sweep_limit=LIMIT), clock=clock)
    async with app.router.lifespan_context(app):
        yield app


async def test_a_backlog_of_windows_closes_a_limited_number_per_transaction(
    limited_app: FastAPI, engine: AsyncEngine, clock: FakeClock
) -> None:
    runtime: Runtime = limited_app.state.runtime
    transport = httpx.ASGITransport(app=limited_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://labelloop.test") as client:
        t = Timeline(client, runtime, clock, live=False)
        for i in range(10):
            await t.predict(f"P{i}", T0 + i * timedelta(seconds=1))
        assert await scalar(engine, "SELECT count(*) FROM predictions WHERE phase <> 'open'") == 0

        # Two hours later in event time: every window above is closed and sealed by the watermark,
        # but this request's transaction moves only LIMIT of them, the earliest.
        clock.set(T0 + timedelta(hours=2))
        await t.predict("LATER", T0 + timedelta(hours=2))
        moved = await rows(engine, "SELECT prediction_id FROM predictions WHERE phase <> 'open'")
        assert sorted(pid for (pid,) in moved) == ["P0", "P1", "P2", "P3"]

        unit = await runtime.tick()  # the rest, over several transactions
        assert not unit.more_due
        assert await scalar(engine, "SELECT count(*) FROM predictions WHERE phase = 'final'") == 10
        assert (await t.label("P9") or {}).get("label_kind") == "implicit_negative"
        assert await scalar(engine, "SELECT phase FROM predictions WHERE prediction_id = 'LATER'") == "open"
