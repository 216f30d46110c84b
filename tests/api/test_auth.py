"""Who may call what, through the HTTP API on SQLite and PostgreSQL: every route x every scope x no
key, a revoked key and a forged one; the open mode of a fresh install; keys over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.api.runtime import Runtime
from service.auth.keys import Scope
from service.store import api_keys
from tests.conftest import T0, settings_for
from tests.helpers import MIN, iso

OPEN = "open"  # no key needed
ANY = "any"  # any valid key
# Every route and what it needs. A route missing here fails test_every_route_is_in_the_matrix.
NEEDS: dict[tuple[str, str], Scope | str] = {
    ("POST", "/v1/predictions"): Scope.INGEST,
    ("POST", "/v1/events"): Scope.INGEST,
    ("GET", "/v1/predictions/{prediction_id}"): Scope.READ,
    ("GET", "/v1/datasets/{use_case}"): Scope.READ,
    ("GET", "/v1/metrics/feedback-loop"): Scope.OPS,
    ("GET", "/v1/advice/window"): Scope.OPS,
    ("GET", "/v1/metrics/models"): Scope.OPS,
    ("GET", "/v1/metrics/pipeline"): Scope.OPS,
    ("GET", "/v1/metrics/quality"): Scope.OPS,
    ("GET", "/metrics"): Scope.OPS,
    ("POST", "/v1/keys"): Scope.ADMIN,
    ("GET", "/v1/keys"): Scope.ADMIN,
    ("DELETE", "/v1/keys/{key_id}"): Scope.ADMIN,
    ("DELETE", "/v1/subjects/{subject_id}"): Scope.ADMIN,
    ("GET", "/v1/erasures"): Scope.ADMIN,
    ("GET", "/openapi.json"): ANY,
    ("GET", "/docs"): ANY,
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    # The dashboard's static shell: no data in it; its requests carry the operator's ops key.
    ("GET", "/dashboard"): OPEN,
    ("GET", "/dashboard/dashboard.js"): OPEN,
    ("GET", "/dashboard/dashboard.css"): OPEN,
}
PREDICTION = {"prediction_id": "P1", "use_case": "recsys", "served_at": iso(T0)}
EVENT = {"event_id": "E1", "prediction_id": "P1", "type": "click", "occurred_at": iso(T0 + MIN)}
REQUESTS: dict[tuple[str, str], tuple[str, Any]] = {  # a concrete path and JSON body per route
    ("POST", "/v1/predictions"): ("/v1/predictions", PREDICTION),
    ("POST", "/v1/events"): ("/v1/events", EVENT),
    ("GET", "/v1/predictions/{prediction_id}"): ("/v1/predictions/P1", None),
    ("GET", "/v1/datasets/{use_case}"): ("/v1/datasets/recsys", None),
    ("GET", "/v1/advice/window"): ("/v1/advice/window?use_case=recsys", None),
    ("GET", "/v1/metrics/quality"): ("/v1/metrics/quality?use_case=recsys", None),
    ("DELETE", "/v1/keys/{key_id}"): ("/v1/keys/000000000000", None),
    ("DELETE", "/v1/subjects/{subject_id}"): ("/v1/subjects/nobody", None),
    ("POST", "/v1/keys"): ("/v1/keys", {"name": "made-by-admin", "scopes": ["read"]}),
}


def routes(app: FastAPI) -> set[tuple[str, str]]:
    return {(method, r.path) for r in iter_route_contexts(app.routes) for method in r.methods or ()}


async def call(client: httpx.AsyncClient, route: tuple[str, str], headers: dict[str, str]) -> httpx.Response:
    method, path = route
    path, body = REQUESTS.get(route, (path, None))
    return await client.request(method, path, json=body, headers=headers)


async def issue(engine: AsyncEngine, runtime: Runtime, *scopes: Scope, revoked: bool = False) -> str:
    async with engine.begin() as conn:
        key = await api_keys.create(conn, "-".join(scopes), set(scopes), T0)
        if revoked:
            assert await api_keys.revoke(conn, key.key_id, T0)
    await runtime.guard.load()
    return key.token


def test_every_route_is_in_the_matrix(app: FastAPI) -> None:
    assert routes(app) == set(NEEDS)


async def test_every_route_by_every_scope(client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime) -> None:
    tokens = {scope: await issue(engine, runtime, scope) for scope in Scope}
    revoked = await issue(engine, runtime, *Scope, revoked=True)
    refused: dict[str, dict[str, str]] = {
        "no key": {},
        "revoked key": {"authorization": f"Bearer {revoked}"},
        "forged key": {"authorization": f"Bearer {tokens[Scope.ADMIN][:-4]}AAAA"},
        "not a bearer": {"authorization": f"Basic {tokens[Scope.ADMIN]}"},
    }
    checked = 0
    for route, needs in NEEDS.items():
        for who, headers in refused.items():
            response = await call(client, route, headers)
            expected = 200 if needs == OPEN else 401
            assert response.status_code == expected, (route, who, response.text)
            if expected == 401:
                assert response.json()["error"] == "unauthorized"
                assert response.json()["detail"][0]["field"] == "header.authorization"
                assert response.headers["www-authenticate"].startswith("Bearer")
            checked += 1
        for scope, token in tokens.items():
            # Both headers carry a key; X-API-Key for half the scopes.
            header = (
                {"x-api-key": token} if scope in (Scope.READ, Scope.ADMIN) else {"authorization": f"Bearer {token}"}
            )
            response = await call(client, route, header)
            if needs in (OPEN, ANY, scope):
                assert response.status_code in (200, 201, 202, 404), (route, scope, response.text)
                if response.status_code == 404:
                    assert response.json()["error"] == "not_found"
            else:
                assert response.status_code == 403, (route, scope, response.text)
                assert response.json()["error"] == "forbidden"
                assert f"lacks the {needs.value!r} scope" in response.json()["detail"][0]["msg"]
            checked += 1
    assert checked == len(NEEDS) * (len(refused) + len(Scope))


async def test_what_a_refused_request_carried_is_not_stored(
    client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime
) -> None:
    reader = {"authorization": f"Bearer {await issue(engine, runtime, Scope.READ)}"}
    assert (await client.post("/v1/predictions", json=PREDICTION, headers=reader)).status_code == 403
    assert (await client.post("/v1/predictions", json=PREDICTION)).status_code == 401
    assert (await client.get("/v1/predictions/P1", headers=reader)).status_code == 404


async def test_a_fresh_install_is_open_until_a_key_is_created(
    client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime
) -> None:
    assert (await client.post("/v1/predictions", json=PREDICTION)).status_code == 202
    # Open, but nobody mints keys over HTTP: the first admin key comes from the CLI.
    minted = await client.post("/v1/keys", json={"name": "intruder", "scopes": ["admin"]})
    assert minted.status_code == 401, minted.text
    assert "labelloop keys create" in minted.json()["detail"][0]["msg"]
    assert (await client.get("/v1/keys")).status_code == 401
    token = await issue(engine, runtime, Scope.INGEST)
    assert (await client.post("/v1/events", json=EVENT)).status_code == 401
    async with engine.begin() as conn:
        assert await api_keys.revoke(conn, token.split("_")[1], T0)
    await runtime.guard.load()
    # Revoking the last key does not open the API again.
    assert (await client.post("/v1/events", json=EVENT)).status_code == 401


async def test_keys_over_http_take_effect_at_once(
    client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime
) -> None:
    admin = {"authorization": f"Bearer {await issue(engine, runtime, Scope.ADMIN)}"}
    created = await client.post("/v1/keys", json={"name": "web-app", "scopes": ["ingest", "ingest"]}, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["scopes"] == ["ingest"]
    web_app = {"authorization": f"Bearer {created.json()['key']}"}
    assert (await client.post("/v1/predictions", json=PREDICTION, headers=web_app)).status_code == 202

    listed = (await client.get("/v1/keys", headers=admin)).json()["keys"]
    assert [k["name"] for k in listed if k["key_id"] == created.json()["key_id"]] == ["web-app"]
    assert all("key" not in k and "secret_hash" not in k for k in listed)

    assert (await client.delete(f"/v1/keys/{created.json()['key_id']}", headers=admin)).status_code == 200
    assert (await client.post("/v1/events", json=EVENT, headers=web_app)).status_code == 401
    assert (await client.delete(f"/v1/keys/{created.json()['key_id']}", headers=admin)).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["everything"]}, "scopes[0]"),
        ({"name": "", "scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": ["read"], "secret": "mine"}, "secret"),
    ],
)
async def test_a_bad_key_request_names_the_field(
    client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime, body: dict[str, Any], field: str
) -> None:
    admin = {"authorization": f"Bearer {await issue(engine, runtime, Scope.ADMIN)}"}
    response = await client.post("/v1/keys", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == field
    assert len((await client.get("/v1/keys", headers=admin)).json()["keys"]) == 1


@pytest.fixture
async def refreshing_app(engine: AsyncEngine, migrated_url: str, policies_file: Path) -> AsyncIterator[FastAPI]:
    settings = settings_for(migrated_url, policies=policies_file, auth="required", auth_refresh=timedelta(seconds=0.05))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_required_auth_with_no_key_refuses_and_a_key_made_elsewhere_arrives(
    refreshing_app: FastAPI, engine: AsyncEngine
) -> None:
    transport = httpx.ASGITransport(app=refreshing_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://labelloop.test") as client:
        assert (await client.get("/v1/keys")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200
        async with engine.begin() as conn:  # as `labelloop keys create` in another process
            key = await api_keys.create(conn, "ops-board", {Scope.OPS}, T0)
        headers = {"authorization": f"Bearer {key.token}"}
        for _ in range(200):
            if (await client.get("/v1/metrics/feedback-loop", headers=headers)).status_code == 200:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("a key created in the store was never accepted")
