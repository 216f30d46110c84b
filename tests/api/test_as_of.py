"""Reproducible datasets, through the API on SQLite and PostgreSQL: a read says the seq it reflects
and the policy digest; `as_of` that seq answers the same rows later, whatever changed since; every
label revision records the digest of the policy that made it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import orjson

from service.api.runtime import Runtime
from tests.conftest import T0, FakeClock
from tests.helpers import MIN, Timeline

W = T0 + 10 * MIN
S = W + timedelta(hours=1)


async def read(client: httpx.AsyncClient, **params: Any) -> tuple[httpx.Response, list[dict[str, Any]]]:
    response = await client.get("/v1/datasets/recsys", params=params)
    assert response.status_code == 200, response.text
    return response, [orjson.loads(line) for line in response.text.splitlines()]


async def test_a_dataset_as_of_a_seq_is_the_dataset_as_it_stood(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("P1", T0)
    await t.predict("P2", T0)
    await t.predict("P3", T0)
    await t.event("P1", "click", T0 + MIN)
    await t.advance_watermark(W)  # P2 and P3: implicit negatives
    then, rows_then = await read(client)
    as_of = int(then.headers["X-Labelloop-Seq"])
    assert as_of == max(r["seq"] for r in rows_then)
    digest = then.headers["X-Labelloop-Policy"]
    assert digest == runtime.policies.use_cases["recsys"].digest
    csv_then = (await client.get("/v1/datasets/recsys", params={"format": "csv"})).text

    await t.event("P2", "click", W + MIN)  # a late click revises P2
    await t.predict("P4", W + 2 * MIN)
    await t.event("P4", "purchase", W + 3 * MIN)
    await t.advance_watermark(S + 30 * MIN)  # and everything of then is final now
    _, now = await read(client)
    assert {r["prediction_id"]: (r["label"], r["status"]) for r in now} == {
        "P1": (1, "final"),
        "P2": (1, "final"),
        "P3": (0, "final"),
        "P4": (1, "final"),
    }

    _, again = await read(client, as_of=as_of)
    assert again == rows_then
    csv_again = (await client.get("/v1/datasets/recsys", params={"format": "csv", "as_of": as_of})).text
    assert csv_again == csv_then
    _, incremental = await read(client, as_of=as_of, since=as_of - 1)
    assert incremental == [r for r in rows_then if r["seq"] > as_of - 1]
    _, final_then = await read(client, as_of=as_of, final_only="true")
    assert final_then == []  # nothing was final at that seq
    later, _ = await read(client, as_of=as_of)
    assert later.headers["X-Labelloop-Seq"] == str(as_of)

    beyond = await client.get("/v1/datasets/recsys", params={"as_of": max(r["seq"] for r in now) + 1})
    assert (beyond.status_code, beyond.json()["detail"][0]["field"]) == (422, "query.as_of")
    history = (await t.lineage("P2"))["history"]
    assert {h["policy"] for h in history} == {digest}
