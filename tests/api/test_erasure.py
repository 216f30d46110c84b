"""Erasure of a subject and retention purges, through the HTTP API on SQLite and PostgreSQL: the
subject's predictions, events and labels gone, tombstones in the dataset, aggregates kept, replays
never bringing anything back, and an audit that names who asked but never whom."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.api.runtime import Runtime
from service.auth.keys import NewKey, Scope
from service.core.policy import BUNDLED_POLICIES
from service.store import api_keys
from service.store.tables import erasures, events, label_history, predictions
from tests.conftest import T0, FakeClock, settings_for
from tests.helpers import MIN, Timeline, iso

SEAL = T0 + 10 * MIN + timedelta(hours=1)  # recsys: window 10 min, allowed lateness 1 h


@pytest.fixture
def private_policies(tmp_path: Path) -> Path:
    """recsys keeps final labels 2 h after serving; variants name the subject by a hashed feature
    or by a context key."""
    policies = yaml.safe_load(BUNDLED_POLICIES.read_text())
    policies["use_cases"]["recsys"]["retention"] = "2h"
    policies["use_cases"]["recsys_hashed"] = {
        **policies["use_cases"]["recsys"],
        "subject": "features.user_id",
        "features": {"hash": ["user_id"]},
    }
    policies["use_cases"]["recsys_context"] = {**policies["use_cases"]["recsys"], "subject": "context.account"}
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(policies))
    return path


@pytest.fixture
async def app(
    engine: AsyncEngine, migrated_url: str, clock: FakeClock, private_policies: Path
) -> AsyncIterator[FastAPI]:
    settings = settings_for(migrated_url, policies=private_policies, feature_hash_key="test-key")
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def admin(app: FastAPI, engine: AsyncEngine) -> NewKey:
    async with engine.begin() as conn:
        key = await api_keys.create(conn, "privacy-officer", set(Scope), T0)
    await app.state.runtime.guard.load()
    return key


@pytest.fixture
async def client(app: FastAPI, admin: NewKey) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {admin.token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://labelloop.test", headers=headers) as client:
        yield client


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


async def dataset(client: httpx.AsyncClient, since: int = 0, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/datasets/recsys", params={"since": since, **params})
    assert response.status_code == 200, response.text
    return [orjson.loads(line) for line in response.text.splitlines()]


async def count(engine: AsyncEngine, table: Any, *where: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one())


async def test_erasing_a_subject_leaves_tombstones_and_nothing_personal(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock, engine: AsyncEngine, admin: NewKey
) -> None:
    t = Timeline(client, runtime, clock)
    alice = {"subject_id": "alice", "features": {"email": "alice@example.com"}, "output": {"score": 0.7}}
    await t.predict("A1", T0, **alice)
    await t.predict("A2", T0, **alice)
    await t.predict("B1", T0, subject_id="bob")
    await t.event("A1", "click", T0 + MIN, actor="user:alice")
    await t.event("A2", "rating", T0 + MIN, value=5, actor="user:alice")
    await t.event("B1", "click", T0 + MIN)
    await t.advance_watermark(SEAL)
    before = await dataset(client)
    assert {r["prediction_id"] for r in before} == {"A1", "A2", "B1"}
    last_seq = max(r["seq"] for r in before)
    figures = await t.metrics()

    response = await client.delete("/v1/subjects/alice")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert {k: answer[k] for k in ("predictions", "events", "labels")} == {"predictions": 2, "events": 2, "labels": 4}

    gone = await client.get("/v1/predictions/A1")
    assert (gone.status_code, gone.json()["error"]) == (410, "erased")
    assert (await client.get("/v1/predictions/B1")).status_code == 200
    tombstones = await dataset(client, since=last_seq)
    assert [(r["prediction_id"], r["status"]) for r in tombstones] == [("A1", "erased"), ("A2", "erased")]
    assert all(r["seq"] > last_seq for r in tombstones)
    assert all(r[k] is None for r in tombstones for k in ("subject_id", "features", "output", "label", "sources"))
    assert await dataset(client, since=last_seq, final_only="true") == tombstones  # a final-only copy learns too
    everything = (await client.get("/v1/datasets/recsys", params={"format": "csv"})).text
    everything += str(await dataset(client))
    assert "alice" not in everything
    for table in (events, label_history):
        assert await count(engine, table, table.c.prediction_id.in_(["A1", "A2"])) == 0
    assert await count(engine, predictions, predictions.c.subject_id.is_not(None)) == 1
    assert await count(engine, predictions, predictions.c.score.is_not(None)) == 0  # read from the output
    assert await t.metrics() == figures  # aggregates stay

    # A replay brings nothing back: the prediction is a duplicate, an event for it is dropped.
    replay = await client.post(
        "/v1/predictions", json={"prediction_id": "A1", "use_case": "recsys", "served_at": iso(T0), **alice}
    )
    assert replay.json() == {"accepted": 0, "duplicates": 1}
    late = {"event_id": "A1-again", "prediction_id": "A1", "type": "click", "occurred_at": iso(T0 + 2 * MIN)}
    assert (await client.post("/v1/events", json=late)).status_code == 202
    await t.advance_watermark(SEAL + timedelta(hours=1))
    assert await count(engine, events, events.c.prediction_id == "A1") == 0
    assert await dataset(client, since=max(r["seq"] for r in tombstones)) == []
    assert (await client.get("/v1/predictions/A1")).status_code == 410

    again = (await client.delete("/v1/subjects/alice")).json()
    assert (again["predictions"], again["events"], again["labels"]) == (0, 0, 0)
    audit = (await client.get("/v1/erasures")).json()["erasures"]
    assert [(a["kind"], a["requested_by"], a["predictions"]) for a in audit] == [
        ("subject", admin.key_id, 0),
        ("subject", admin.key_id, 2),
    ]
    assert "alice" not in str(audit)


async def test_an_open_prediction_erased_mid_window_never_gets_a_label(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock, engine: AsyncEngine
) -> None:
    """The writer's cached state of an open prediction goes with it: no implicit negative later."""
    t = Timeline(client, runtime, clock)
    await t.predict("A1", T0, subject_id="alice")
    await t.predict("A2", T0, subject_id="alice")
    await t.event("A1", "click", T0 + MIN)  # A1 labeled (in the dataset), A2 not yet
    assert [r["prediction_id"] for r in await dataset(client)] == ["A1"]
    assert (await client.delete("/v1/subjects/alice")).json()["predictions"] == 2
    await t.event("A1", "purchase", T0 + 2 * MIN)
    await t.advance_watermark(SEAL)
    rows = await dataset(client)
    assert [(r["prediction_id"], r["status"]) for r in rows] == [("A1", "erased")]  # A2 never was in it
    assert await count(engine, events) == 0
    assert await count(engine, label_history) == 0


async def test_a_subject_named_by_a_hashed_feature_is_erased_by_its_id(client: httpx.AsyncClient) -> None:
    body = {"prediction_id": "H1", "use_case": "recsys_hashed", "served_at": iso(T0), "features": {"user_id": 42}}
    assert (await client.post("/v1/predictions", json=body)).status_code == 202
    stored = (await client.get("/v1/predictions/H1")).json()["prediction"]
    assert stored["subject_id"] == stored["features"]["user_id"] != "42"
    assert (await client.delete("/v1/subjects/42")).json()["predictions"] == 1
    assert (await client.get("/v1/predictions/H1")).status_code == 410


@pytest.mark.parametrize("account", ["a/b", "x" * 300, "tab\there"])
async def test_a_subject_that_no_path_could_name_is_refused(client: httpx.AsyncClient, account: str) -> None:
    body = {"prediction_id": "C1", "use_case": "recsys_context", "served_at": iso(T0), "context": {"account": account}}
    response = await client.post("/v1/predictions", json=body)
    assert response.status_code == 422, response.text
    assert "context.account" in response.text
    assert (await client.get("/v1/predictions/C1")).status_code == 404


async def test_retention_purges_final_predictions_served_before_it(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock, engine: AsyncEngine
) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("OLD", T0, subject_id="s")
    await t.event("OLD", "click", T0 + MIN)
    await t.predict("NEW", T0 + timedelta(hours=2), subject_id="s")
    await t.advance_watermark(T0 + timedelta(hours=2, minutes=5))  # OLD final, NEW open
    figures = await t.metrics()
    purged = await runtime.purge(by="test")
    assert (purged["recsys"].predictions, purged["recsys"].events) == (1, 1)
    assert (await client.get("/v1/predictions/OLD")).status_code == 404
    assert (await client.get("/v1/predictions/NEW")).status_code == 200
    assert await count(engine, label_history, label_history.c.prediction_id == "OLD") == 0
    assert await t.metrics() == figures
    assert (await runtime.purge(by="test"))["recsys"].predictions == 0
    async with engine.connect() as conn:
        audit = (await conn.execute(select(erasures.c.kind, erasures.c.use_case, erasures.c.predictions))).all()
    assert [tuple(a) for a in audit] == [("retention", "recsys", 1)]
