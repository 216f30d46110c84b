"""What a request must look like before it is parsed: a JSON media type, a bounded size; and the
router's own errors in the documented JSON shape. Nothing of a refused request is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from tests.conftest import T0, FakeClock, settings_for
from tests.helpers import iso

LIMIT = 4096


@pytest.fixture
async def client(
    engine: AsyncEngine, migrated_url: str, clock: FakeClock, policies_file: Path
) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(settings_for(migrated_url, policies=policies_file, max_body_bytes=LIMIT), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://labelloop.test") as client:
            yield client


def prediction(prediction_id: str, padding: int = 0) -> bytes:
    body = {
        "prediction_id": prediction_id,
        "use_case": "recsys",
        "served_at": iso(T0),
        "features": {"x": "y" * padding},
    }
    return orjson.dumps(body)


async def stored(client: httpx.AsyncClient, prediction_id: str) -> bool:
    return (await client.get(f"/v1/predictions/{prediction_id}")).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx"],
)
async def test_only_json_bodies_are_read(client: httpx.AsyncClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/v1/predictions", content=prediction("P"), headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    assert response.json()["detail"][0]["field"] == "header.content-type"
    assert not await stored(client, "P")


async def test_json_with_a_charset_is_json(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "Application/JSON; charset=utf-8"}
    assert (await client.post("/v1/predictions", content=prediction("P"), headers=headers)).status_code == 202
    assert await stored(client, "P")


async def test_a_body_declared_too_large_is_refused_unread(client: httpx.AsyncClient) -> None:
    body = prediction("P", padding=LIMIT)
    response = await client.post("/v1/predictions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "body_too_large"
    assert f"more than {LIMIT} bytes" in response.json()["detail"][0]["msg"]
    assert not await stored(client, "P")


async def test_a_streamed_body_is_cut_off_at_the_limit(client: httpx.AsyncClient) -> None:
    """Chunked, no Content-Length: counted while read."""
    body = prediction("P", padding=LIMIT)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = await client.post("/v1/predictions", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert not await stored(client, "P")


async def test_a_body_just_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    body = prediction("P", padding=LIMIT - len(prediction("P")) - 1)
    assert len(body) < LIMIT
    assert (
        await client.post("/v1/predictions", content=body, headers={"content-type": "application/json"})
    ).status_code == 202


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v2/nothing", 404, "not_found"),
        ("GET", "/v1/predictions", 405, "method_not_allowed"),
        ("DELETE", "/v1/datasets/recsys", 405, "method_not_allowed"),
    ],
)
async def test_router_errors_have_the_documented_shape(
    client: httpx.AsyncClient, method: str, path: str, status: int, error: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == error
    assert body["detail"][0]["field"] == "path"
    assert path in body["detail"][0]["msg"]
