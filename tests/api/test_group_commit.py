"""Concurrent single-record requests share one transaction (group commit), on SQLite and
PostgreSQL: each is answered after the shared commit, a refused request fails alone, and a failed
commit fails every request that waited on it with nothing of them stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.runtime import Runtime
from tests.api.test_bad_input import prediction

N = 40


@pytest.fixture
async def raw_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Server errors come back as 500 responses instead of being raised in the test."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://labelloop.test") as client:
        yield client


def count_commits(runtime: Runtime) -> list[int]:
    commits = [0]

    def on_commit(_: Any) -> None:
        commits[0] += 1

    event.listen(runtime.db.engine.sync_engine, "commit", on_commit)
    return commits


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the requests did not queue in time")


async def while_writer_busy(runtime: Runtime, requests: list[Callable[[], Awaitable[httpx.Response]]]) -> list[int]:
    """Send the requests while another transaction holds the store's writer: the first leads a
    commit of its own and waits for the writer; the others queue behind it, in this order, and
    share the next commit. Their status codes, in order."""
    group = runtime.sink._group  # type: ignore[attr-defined]
    async with runtime.db.write():
        tasks = [asyncio.create_task(requests[0]())]
        await _until(group._turn.locked)
        for number, request in enumerate(requests[1:], 1):
            tasks.append(asyncio.create_task(request()))
            await _until(lambda number=number: len(group._queue) == number)
    return [response.status_code for response in await asyncio.gather(*tasks)]


async def stored_ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(text("SELECT prediction_id FROM predictions"))).scalars())


async def test_concurrent_requests_share_a_commit(
    raw_client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    commits = count_commits(runtime)
    requests = [lambda i=i: raw_client.post("/v1/predictions", json=prediction(f"P{i}")) for i in range(N)]
    statuses = await while_writer_busy(runtime, requests)
    assert statuses == [202] * N
    assert await stored_ids(engine) == {f"P{i}" for i in range(N)}
    # The writer's own transaction, the leader's, and one for the 39 that queued behind it.
    assert commits[0] <= 3, commits


async def test_a_refused_request_fails_alone(
    raw_client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    assert (await raw_client.post("/v1/predictions", json=prediction("TAKEN"))).status_code == 202
    good = [lambda i=i: raw_client.post("/v1/predictions", json=prediction(f"P{i}")) for i in range(6)]
    unknown = prediction("U", use_case="nope")
    conflict = prediction("TAKEN", model="other")
    statuses = await while_writer_busy(
        runtime,
        [
            *good[:2],
            lambda: raw_client.post("/v1/predictions", json=unknown),
            *good[2:4],
            lambda: raw_client.post("/v1/predictions", json=conflict),
            *good[4:],
        ],
    )
    assert statuses == [202, 202, 422, 202, 202, 409, 202, 202]
    assert await stored_ids(engine) == {"TAKEN"} | {f"P{i}" for i in range(6)}


async def _refuse_inserts_of(engine: AsyncEngine, prediction_id: str) -> None:
    """A database fault for one id: a trigger that aborts its insert (not a rule labelloop knows)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_test BEFORE INSERT ON predictions "
                    f"WHEN NEW.prediction_id = '{prediction_id}' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse_test() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.prediction_id = '{prediction_id}' THEN RAISE EXCEPTION 'disk on fire'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_test BEFORE INSERT ON predictions "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_test()"
                )
            )


async def _drop_refusal(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.execute(text("DROP TRIGGER refuse_test"))
        else:
            await conn.execute(text("DROP TRIGGER refuse_test ON predictions"))
            await conn.execute(text("DROP FUNCTION refuse_test()"))


async def test_a_failed_commit_fails_every_request_of_its_group(
    raw_client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    await _refuse_inserts_of(engine, "BOOM")
    try:
        requests = [lambda i=i: raw_client.post("/v1/predictions", json=prediction(f"P{i}")) for i in range(5)]
        requests.insert(3, lambda: raw_client.post("/v1/predictions", json=prediction("BOOM")))
        statuses = await while_writer_busy(runtime, requests)
    finally:
        await _drop_refusal(engine)
    # The leader committed alone; the group that held BOOM failed whole: no 202 for unstored data.
    assert statuses == [202, 500, 500, 500, 500, 500]
    assert await stored_ids(engine) == {"P0"}
    assert len(runtime.state) == 0  # after a failed commit nothing held in memory is trusted
    # The same requests again, the fault gone: all stored.
    for i in range(1, 5):
        assert (await raw_client.post("/v1/predictions", json=prediction(f"P{i}"))).status_code == 202
    assert await stored_ids(engine) == {f"P{i}" for i in range(5)}


async def test_events_and_their_predictions_in_one_group_label_alike(
    raw_client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    """An event queued ahead of its prediction in the same group waits as an orphan and is joined
    by the prediction within the same transaction."""
    served = prediction("P")["served_at"]
    click = {"event_id": "E", "prediction_id": "P", "type": "click", "occurred_at": served}
    statuses = await while_writer_busy(
        runtime,
        [
            lambda: raw_client.post("/v1/predictions", json=prediction("LEAD")),
            lambda: raw_client.post("/v1/events", json=click),
            lambda: raw_client.post("/v1/predictions", json=prediction("P")),
        ],
    )
    assert statuses == [202, 202, 202]
    lineage = (await raw_client.get("/v1/predictions/P")).json()
    assert lineage["label"]["label"] == 1
    assert [e["disposition"] for e in lineage["events"]] == ["counted"]


async def test_one_id_from_two_requests_of_a_group(
    raw_client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    """As if they had come one after the other: the same content again is a duplicate, other
    content a conflict for the later request only."""
    responses: list[httpx.Response] = []

    async def post(body: dict[str, Any]) -> httpx.Response:
        response = await raw_client.post("/v1/predictions", json=body)
        responses.append(response)
        return response

    statuses = await while_writer_busy(
        runtime,
        [
            lambda: post(prediction("LEAD")),
            lambda: post(prediction("SAME")),
            lambda: post(prediction("SAME")),
            lambda: post(prediction("OTHER")),
            lambda: post(prediction("OTHER", model="changed")),
        ],
    )
    assert statuses == [202, 202, 202, 202, 409]
    bodies = {r.json().get("duplicates", "conflict") for r in responses if r.status_code == 202}
    assert bodies == {0, 1}
    conflict = next(r for r in responses if r.status_code == 409).json()["detail"][0]
    assert conflict["ids"] == ["OTHER"]
    assert conflict["msg"] == "already stored with different content"
    async with engine.connect() as conn:
        model = (await conn.execute(text("SELECT model FROM predictions WHERE prediction_id = 'OTHER'"))).scalar()
    assert model is None
