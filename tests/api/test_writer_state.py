"""The embedded writer keeps the label state of open predictions in memory (service/store/state.py).
Whatever it holds, the labels must be those the store alone gives: the same workload, with late
events, revisions, orphans, duplicates, explicit labels and windows closing in between, labels
alike with a large state, a state of three predictions (constant eviction) and none, on SQLite
and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.api.runtime import Runtime
from tests.conftest import T0, FakeClock, _truncate, settings_for
from tests.helpers import iso


def workload(seed: int = 11, n: int = 80) -> list[tuple[Any, str, dict[str, Any]]]:
    """(arrival time, path, body): predictions every 20 s, events with delays from seconds to
    past the seal, some sent before their prediction, some sent twice."""
    rng = random.Random(seed)
    sends = []
    for i in range(n):
        served = T0 + timedelta(seconds=20 * i)
        pid = f"P{i}"
        arrives = served + timedelta(seconds=rng.choice([0, 0, 0, 40]))  # a few after their events
        sends.append(
            (arrives, "/v1/predictions", {"prediction_id": pid, "use_case": "recsys", "served_at": iso(served)})
        )
        for k in range(rng.choice([0, 1, 1, 2, 3])):
            kind = rng.choice(["click", "click", "purchase", "return", "rating"])
            delay = timedelta(seconds=rng.choice([5, 30, 300, 900, 3000, 4500, 9000]))
            body: dict[str, Any] = {
                "event_id": f"E{i}-{k}",
                "prediction_id": pid,
                "type": kind,
                "occurred_at": iso(served + delay),
                "actor": f"user:{i % 7}",
            }
            if kind == "rating":
                body["value"] = rng.randint(1, 5)
            sends.append((served + delay + timedelta(seconds=rng.choice([0, 1, 60])), "/v1/events", body))
            if rng.random() < 0.15:  # a retry of the same event
                sends.append((served + delay + timedelta(seconds=90), "/v1/events", body))
    return sorted(sends, key=lambda s: (s[0], s[1], orjson.dumps(s[2])))


@asynccontextmanager
async def labelloop(
    url: str, policies: Path, clock: FakeClock, capacity: int
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    app = create_app(settings_for(url, policies=policies, state_capacity=capacity), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://labelloop.test") as client:
            yield client, app.state.runtime


async def labels_of_run(engine: AsyncEngine, url: str, policies: Path, capacity: int) -> tuple[list[Any], list[Any]]:
    """Replay the workload live (the clock follows arrival, the ticker runs every minute of it),
    events for several predictions batched into one request; the dataset rows and every
    prediction's lineage at the end."""
    await _truncate(engine)
    clock = FakeClock(T0)
    sends = workload()
    async with labelloop(url, policies, clock, capacity) as (client, runtime):
        pending: list[dict[str, Any]] = []

        async def flush() -> None:
            if pending:
                response = await client.post("/v1/events", json={"events": pending})
                assert response.status_code == 202, response.text
                pending.clear()

        next_tick = T0
        for at, path, body in sends:
            if next_tick <= at or path != "/v1/events" or len(pending) == 5:
                await flush()
            while next_tick <= at:
                clock.set(next_tick)
                await runtime.tick()
                next_tick += timedelta(minutes=1)
            clock.set(at)
            if path == "/v1/events":
                pending.append(body)
                continue
            response = await client.post(path, json=body)
            assert response.status_code == 202, response.text
        await flush()
        clock.set(sends[-1][0] + timedelta(hours=3))
        await runtime.tick()  # idle: the wall clock seals everything
        rows = [orjson.loads(line) for line in (await client.get("/v1/datasets/recsys")).text.splitlines()]
        lineages = [(await client.get(f"/v1/predictions/P{i}")).json() for i in range(80)]
        if capacity:
            assert len(runtime.state) <= capacity
    return rows, lineages


async def test_labels_are_the_same_whatever_the_state_holds(
    engine: AsyncEngine, migrated_url: str, policies_file: Path
) -> None:
    large = await labels_of_run(engine, migrated_url, policies_file, 100_000)
    tiny = await labels_of_run(engine, migrated_url, policies_file, 3)
    none = await labels_of_run(engine, migrated_url, policies_file, 0)
    rows, lineages = large
    assert len(rows) == 80  # every prediction labeled
    kinds = {row["label_kind"] for row in rows}
    assert {"behavioral", "implicit_negative", "explicit"} <= kinds
    assert any(e["disposition"] == "too_late" for lineage in lineages for e in lineage["events"])
    assert all(lineage["label"]["status"] == "final" for lineage in lineages)
    assert tiny == large
    assert none == large
