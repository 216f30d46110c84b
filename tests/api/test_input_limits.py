"""Hostile or oversized records, on SQLite and PostgreSQL alike: a 4xx naming the field and the
reason, nothing of the request stored; and what is at the edge of the limits is stored unchanged."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.api.test_bad_input import lineage
from tests.conftest import T0
from tests.helpers import MIN, iso

JSON = {"content-type": "application/json"}


def prediction(prediction_id: str = "P", **fields: Any) -> dict[str, Any]:
    return {"prediction_id": prediction_id, "use_case": "recsys", "served_at": iso(T0), **fields}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def nothing_stored(client: httpx.AsyncClient, *prediction_ids: str) -> None:
    for prediction_id in prediction_ids:
        assert (await client.get(f"/v1/predictions/{prediction_id}")).status_code == 404
    assert (await client.get("/v1/datasets/recsys")).text == ""


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"prediction_id": "P", "prediction_id": "Q", "use_case": "recsys"}', "duplicate key 'prediction_id'"),
        (b'{"prediction_id": "P", "use_case": "recsys", "features": {"n": 9223372036854775808}}', "beyond 64 bits"),
        (b'{"prediction_id": "P", "use_case": "recsys", "features": {"n": -9223372036854775809}}', "beyond 64 bits"),
        (b'{"prediction_id": "P", "use_case": "recsys", "features": {"n": NaN}}', "NaN is not JSON"),
        (b'{"prediction_id": "P", "use_case": "recsys", "features": {"n": 1e400}}', "beyond the range of a double"),
        (b'{"prediction_id": "P", "use_case": "recsys", "features": {"n": ' + b"9" * 5000 + b"}}", "beyond 64 bits"),
        (b'{"prediction_id": "P", "use_case": "recsys", "features": {"n": "\xff"}}', "not UTF-8"),
        (b"\xff\xfe{\x00}\x00", "not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "nested too deep"),
    ],
)
async def test_json_a_lenient_parser_would_change_is_refused(
    client: httpx.AsyncClient, raw: bytes, reason: str
) -> None:
    response = await client.post("/v1/predictions", content=raw, headers=JSON)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "malformed_json"
    assert reason in response.json()["detail"][0]["msg"]
    await nothing_stored(client, "P", "Q")


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        (prediction("a/b"), "prediction_id", "holds '/'"),
        (prediction("a\x00b"), "prediction_id", "holds '\\x00'"),
        (prediction(model="m\nx"), "model", "holds '\\n'"),
        (prediction(features={"name": "x\x00y"}), "features", "NUL"),
        (prediction(features={"x\x00": 1}), "features", "NUL"),
        (prediction(features={"deep": nested(40)}), "features", "deeper than 32 levels"),
        (prediction(features={str(i): i for i in range(1001)}), "features", "more than 1000 keys"),
        (prediction(context={"s": "x" * 70_000}), "context", "70000 characters; at most 65536"),
        (prediction(output={str(i): "x" * 60_000 for i in range(5)}), "output", "at most 262144"),
    ],
)
async def test_records_beyond_the_limits_name_the_field(
    client: httpx.AsyncClient, record: dict[str, Any], field: str, reason: str
) -> None:
    body = {"predictions": [prediction("ok-1"), record]}
    response = await client.post("/v1/predictions", json=body)
    assert response.status_code == 422, response.text
    [problem] = [p for p in response.json()["detail"] if p["field"].startswith("predictions[1]")]
    assert problem["field"] == f"predictions[1].{field}"
    assert reason in problem["msg"]
    await nothing_stored(client, "ok-1")


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"value": "great\x00"}, "value"), ({"actor": "user:\x00"}, "actor"), ({"payload": {"k": "\x00"}}, "payload")],
)
async def test_nul_in_an_event_is_refused(client: httpx.AsyncClient, fields: dict[str, Any], field: str) -> None:
    assert (await client.post("/v1/predictions", json=prediction())).status_code == 202
    event = {"event_id": "E", "prediction_id": "P", "type": "rating", "occurred_at": iso(T0 + MIN), **fields}
    response = await client.post("/v1/events", json=event)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == field
    assert "NUL" in response.json()["detail"][0]["msg"] or "'\\x00'" in response.json()["detail"][0]["msg"]
    assert (await lineage(client, "P"))["events"] == []


async def test_what_is_at_the_edge_is_stored_unchanged(client: httpx.AsyncClient) -> None:
    features = {
        "max": 2**63 - 1,
        "min": -(2**63),
        "text": "é, 中文, 😀 and a \\u0000 that is only text",
        "deep": nested(31),  # 32 levels with the field itself
        "long": "x" * 65_536,
    }
    response = await client.post("/v1/predictions", content=orjson.dumps(prediction(features=features)), headers=JSON)
    assert response.status_code == 202, response.text
    assert (await lineage(client, "P"))["prediction"]["features"] == features


@pytest.mark.parametrize("query", ["since=9223372036854775808", "limit=9223372036854775808", "since=-1", "limit=0"])
async def test_dataset_bounds(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/v1/datasets/recsys?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == f"query.{query.split('=')[0]}"


async def test_the_largest_seq_is_a_valid_since(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/predictions", json=prediction())).status_code == 202
    response = await client.get(f"/v1/datasets/recsys?since={2**63 - 1}")
    assert response.status_code == 200
    assert response.text == ""
