"""The trainer's dataset endpoint: incremental pulls by seq, filters, JSONL and CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta, timezone
from typing import Any

import httpx
import pytest

from service.api.runtime import Runtime
from tests.conftest import T0, FakeClock
from tests.helpers import MIN, Timeline


async def rows(client: httpx.AsyncClient, use_case: str = "recsys", **params: Any) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/datasets/{use_case}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


async def test_since_returns_revisions_and_newly_final_rows(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("A", T0, model="ranker", model_version="1", features={"f": 1})
    await t.predict("B", T0 + MIN, model="ranker", model_version="1")
    await t.event("A", "click", T0 + 2 * MIN)
    await t.advance_watermark(T0 + 20 * MIN)  # B's window closes: implicit negative

    first = await rows(client)
    assert [(r["prediction_id"], r["label"], r["label_kind"]) for r in first] == [
        ("A", 1, "behavioral"),
        ("B", 0, "implicit_negative"),
    ]
    assert first[0]["features"] == {"f": 1}
    assert first[0]["sources"][0]["type"] == "click"
    cursor = first[-1]["seq"]
    assert await rows(client, since=cursor) == []

    await t.event("B", "click", T0 + 15 * MIN)  # late, before the seal: the negative was fake
    changed = await rows(client, since=cursor)
    assert [(r["prediction_id"], r["label"], r["revision"]) for r in changed] == [("B", 1, 1)]
    cursor = changed[-1]["seq"]

    await t.advance_watermark(T0 + 2 * timedelta(hours=1))  # both sealed
    final = await rows(client, since=cursor)
    assert sorted((r["prediction_id"], r["status"]) for r in final) == [("A", "final"), ("B", "final")]
    assert all(r["seq"] > cursor for r in final)


async def test_filters_and_limit(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    for i in range(6):
        version = "1" if i < 3 else "2"
        await t.predict(f"P{i}", T0 + i * MIN, model="ranker", model_version=version)
        await t.event(f"P{i}", "click", T0 + i * MIN + timedelta(seconds=5))
    assert len(await rows(client)) == 6
    assert [r["prediction_id"] for r in await rows(client, model_version="2")] == ["P3", "P4", "P5"]
    assert await rows(client, model="other") == []
    assert [r["prediction_id"] for r in await rows(client, limit=2)] == ["P0", "P1"]
    window = {"served_from": (T0 + MIN).isoformat(), "served_to": (T0 + 3 * MIN).isoformat()}
    assert [r["prediction_id"] for r in await rows(client, **window)] == ["P1", "P2"]
    assert await rows(client, final_only=True) == []
    await t.advance_watermark(T0 + 2 * timedelta(hours=1))
    assert len(await rows(client, final_only=True)) == 6


async def test_pages_larger_than_one_query(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    """More rows than one keyset page (1,000): every row once, in seq order."""
    predictions = [
        {"prediction_id": f"P{i:05d}", "use_case": "recsys", "served_at": T0.isoformat()} for i in range(2500)
    ]
    assert (await client.post("/v1/predictions", json={"predictions": predictions})).status_code == 202
    events = [
        {"event_id": f"E{i:05d}", "prediction_id": f"P{i:05d}", "type": "click", "occurred_at": (T0 + MIN).isoformat()}
        for i in range(2500)
    ]
    assert (await client.post("/v1/events", json={"events": events})).status_code == 202
    got = await rows(client)
    assert len(got) == 2500
    assert len({r["prediction_id"] for r in got}) == 2500
    assert [r["seq"] for r in got] == sorted(r["seq"] for r in got)
    assert len(await rows(client, limit=1500)) == 1500


async def test_csv(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("A", T0, features={"f": [1, 2]})
    await t.event("A", "rating", T0 + MIN, value=5, actor="user:7")
    response = await client.get("/v1/datasets/recsys", params={"format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert len(table) == 1
    row = table[0]
    assert (row["prediction_id"], row["label"], row["label_kind"], row["status"]) == (
        "A",
        "1",
        "explicit",
        "provisional",
    )
    assert json.loads(row["features"]) == {"f": [1, 2]}
    assert json.loads(row["sources"])[0]["actor"] == "user:7"


async def test_a_row_is_the_same_in_jsonl_and_csv(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    """JSONL lines are encoded by the database: every column, types kept, served_at in UTC with
    microseconds whatever offset it was sent with."""
    t = Timeline(client, runtime, clock)
    served = (T0 + timedelta(microseconds=1500)).astimezone(timezone(timedelta(hours=-5)))
    features = {"f": [1, 2.5, None], "s": 'ça "va"\n', "nested": {"deep": True}}
    await t.predict("A", served, model="ranker", model_version="7", subject_id="user:7", features=features)
    await t.event("A", "rating", T0 + timedelta(seconds=90), value=5, actor="user:7", event_id="r1")
    expected = {
        "prediction_id": "A",
        "model": "ranker",
        "model_version": "7",
        "served_at": "2026-11-02T12:00:00.001500+00:00",
        "subject_id": "user:7",
        "features": features,
        "output": None,
        "label": 1,
        "label_kind": "explicit",
        "status": "provisional",
        "sources": [{"event_id": "r1", "type": "rating", "actor": "user:7"}],
        "feedback_delay_s": 89.9985,
        "revision": 0,
        "seq": 1,
        "p_flip": None,  # a provisional explicit label: not estimated
    }
    [row] = await rows(client)
    assert row == expected
    assert list(row) == list(expected)  # the documented column order

    response = await client.get("/v1/datasets/recsys", params={"format": "csv"})
    [cells] = list(csv.DictReader(io.StringIO(response.text)))
    assert cells["served_at"] == expected["served_at"]
    assert json.loads(cells["features"]) == features
    assert (cells["output"], float(cells["feedback_delay_s"]), cells["seq"], cells["p_flip"]) == ("", 89.9985, "1", "")


async def test_unknown_use_case_and_bad_query(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/datasets/nope")
    assert missing.status_code == 404
    assert missing.json()["detail"][0]["field"] == "path.use_case"
    bad = await client.get("/v1/datasets/recsys", params={"since": "-1"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "query.since"
    naive = await client.get("/v1/datasets/recsys", params={"served_from": "2026-01-01T00:00:00"})
    assert naive.status_code == 422
    assert naive.json()["detail"][0]["field"] == "query.served_from"


@pytest.mark.parametrize(
    ("path", "field"),
    [  # found by tests/api/test_fuzz.py: each was a 500 (PostgreSQL refuses NUL; year 0 in UTC)
        ("/v1/datasets/recsys?model=a%00b", "query.model"),
        ("/v1/datasets/recsys?model_version=a%00b", "query.model_version"),
        ("/v1/datasets/recsys?served_from=0001-01-01T00:00:00%2B00:10", "query.served_from"),
        ("/v1/datasets/recsys?served_to=0001-01-01T00:00:00%2B00:10", "query.served_to"),
        ("/v1/metrics/feedback-loop?since=0001-01-01T00:00:00%2B00:10", "query.since"),
        ("/v1/predictions/a%00b", "path.prediction_id"),
    ],
)
async def test_a_read_that_nothing_could_match_is_a_422(client: httpx.AsyncClient, path: str, field: str) -> None:
    response = await client.get(path)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == field
