"""The database unreachable or stalled under the API (PostgreSQL behind a proxy the test cuts and
stalls): 503 JSON with Retry-After within the configured timeouts, never a 202 for what was not
stored, /readyz failing meanwhile; recovery without a restart, and retried requests counted once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from service.api.app import create_app
from service.store import migrate
from service.store.database import create_engine
from service.store.tables import metadata
from tests.conftest import T0, FakeClock, settings_for
from tests.helpers import MIN, iso
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres
TIMEOUTS = {"db_connect_timeout": timedelta(seconds=1), "db_statement_timeout": timedelta(seconds=2)}
BOUND_S = 15.0  # far above the timeouts: this catches a hang, not a slow answer


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def client(
    proxy: TcpProxy, postgres_url: str, clock: FakeClock, policies_file: Path
) -> AsyncIterator[httpx.AsyncClient]:
    engine = create_engine(postgres_url, "labelloop-tests")
    await migrate.upgrade(engine)
    async with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(table.delete())
    await engine.dispose()
    proxied = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app: FastAPI = create_app(settings_for(proxied, policies=policies_file, **TIMEOUTS), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://labelloop.test", timeout=60) as client:
            yield client
        proxy.restore()  # the lifespan's exit releases the lease through it


def prediction(prediction_id: str) -> dict[str, Any]:
    return {"prediction_id": prediction_id, "use_case": "recsys", "served_at": iso(T0)}


def click(event_id: str, prediction_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "prediction_id": prediction_id, "type": "click", "occurred_at": iso(T0 + MIN)}


async def refused_in_time(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    started = time.monotonic()
    response = await client.post(path, json=body)
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"] == "store_unavailable"
    assert "retry" in response.json()["detail"][0]["msg"]
    assert elapsed < BOUND_S, f"answered after {elapsed:.1f} s"
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"


async def recovers(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 202, response.text
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_an_unreachable_store_answers_503_and_recovers(
    client: httpx.AsyncClient, proxy: TcpProxy, fault: str
) -> None:
    assert (await client.post("/v1/predictions", json=prediction("before"))).status_code == 202
    assert (await client.get("/readyz")).status_code == 200

    getattr(proxy, fault)()
    await refused_in_time(client, "/v1/predictions", prediction("during"))
    await refused_in_time(client, "/v1/events", click("click-before", "before"))
    dataset = await client.get("/v1/datasets/recsys")
    assert dataset.status_code == 503, dataset.text  # answered before the stream starts
    assert dataset.json()["error"] == "store_unavailable"
    proxy.restore()

    # The client retries what was refused: once stored, each counted once.
    await recovers(client, "/v1/predictions", prediction("during"))
    await recovers(client, "/v1/events", click("click-before", "before"))
    again = await client.post("/v1/events", json=click("click-before", "before"))
    assert again.json() == {"accepted": 0, "duplicates": 1}

    rows = [
        httpx.Response(200, content=line).json()
        for line in (await client.get("/v1/datasets/recsys")).content.splitlines()
    ]
    assert sorted(r["prediction_id"] for r in rows if r["label"] == 1) == ["before"]
    lineage = (await client.get("/v1/predictions/before")).json()
    assert [e["event_id"] for e in lineage["events"]] == ["click-before"]
    assert (await client.get("/v1/predictions/during")).status_code == 200
