"""Dataset pages cut by bytes as well as rows: the stream is the same whatever the budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from tests.api.test_bad_input import prediction
from tests.conftest import FakeClock, settings_for


@pytest.fixture(params=[1, 3000, 10**9], ids=["one-row-pages", "few-row-pages", "row-bound-pages"])
async def app(
    request: pytest.FixtureRequest, engine: AsyncEngine, migrated_url: str, clock: FakeClock, policies_file: Path
) -> AsyncIterator[FastAPI]:
    settings = settings_for(migrated_url, policies=policies_file, dataset_page_bytes=request.param)
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
async def test_every_row_once_in_seq_order_whatever_the_page_budget(client: httpx.AsyncClient, fmt: str) -> None:
    records = [prediction(f"p{i:03}", features={"pad": "x" * (37 * i)}) for i in range(40)]
    assert (await client.post("/v1/predictions", json={"predictions": records})).status_code == 202
    await client.post(
        "/v1/events",
        json={"events": [{"event_id": f"c{i}", "prediction_id": f"p{i:03}", "type": "click"} for i in range(0, 40, 3)]},
    )
    response = await client.get(f"/v1/datasets/recsys?format={fmt}")
    lines = response.text.splitlines()
    body = lines[1:] if fmt == "csv" else lines
    ids = [line.split(",")[0] if fmt == "csv" else orjson.loads(line)["prediction_id"] for line in body]
    assert ids == [f"p{i:03}" for i in range(0, 40, 3)]  # each once, in seq order
    limited = await client.get(f"/v1/datasets/recsys?format={fmt}&limit=5")
    assert len(limited.text.splitlines()) == 5 + (fmt == "csv")
