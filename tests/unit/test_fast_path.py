"""The ingest fast path, without a database: it serves exactly the POST routes it was given, names
the route for the access log, answers what the endpoint raises as FastAPI's handlers would, and
leaves everything else (and every fault) to the app behind it."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from service.api import errors
from service.api.errors import BadRequest, problem
from service.api.fast_path import IngestFastPath


def build() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.post("/v1/things")
    async def things(request: Request) -> Response:
        body = await request.json()
        if body.get("bad"):
            raise BadRequest(422, "validation_error", [problem(["body", "bad"], "not allowed")])
        if body.get("bug"):
            raise RuntimeError("a bug")
        return JSONResponse({"route": request.scope["route"].path}, status_code=202)

    @app.get("/v1/things")
    async def list_things() -> dict[str, str]:
        return {"listed": "yes"}

    fast_routes = [route for route in app.routes if getattr(route, "path", "") == "/v1/things"]
    app.add_middleware(IngestFastPath, routes=fast_routes)
    return app


@pytest.fixture
def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_the_post_route_is_served_with_its_template_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/things", json={})
    assert response.status_code == 202
    assert response.json() == {"route": "/v1/things"}


async def test_what_the_endpoint_raises_is_answered_in_the_api_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/things", json={"bad": True})
    assert response.status_code == 422
    assert response.json() == {
        "error": "validation_error",
        "detail": [{"loc": ["body", "bad"], "field": "bad", "msg": "not allowed"}],
    }


async def test_a_fault_is_left_to_the_outer_middleware(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/things", json={"bug": True})
    assert response.status_code == 500  # ServerErrorMiddleware: the exception was re-raised, not answered


async def test_other_methods_and_paths_go_through_routing(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/things")).json() == {"listed": "yes"}
    assert (await client.put("/v1/things", json={})).status_code == 405
    assert (await client.post("/v1/things/", json={})).status_code in (307, 404)


async def test_the_fast_path_is_the_one_that_serves() -> None:
    """Behind it, a router that records what reaches it: the POST never does."""
    seen: list[str] = []

    async def routing(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        await Response(status_code=418)(scope, receive, send)

    app = build()
    fast = IngestFastPath(routing, routes=[r for r in app.routes if getattr(r, "path", "") == "/v1/things"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fast), base_url="http://t") as client:
        response = await client.post("/v1/things", json={})
        other = await client.get("/v1/things")
    assert response.status_code == 202
    assert other.status_code == 418
    assert seen == ["/v1/things"]
