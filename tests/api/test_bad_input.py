"""Bad input to the ingest routes: a 4xx whose JSON body names the field and the reason, and
nothing of the rejected request stored (checked through the API), on SQLite and PostgreSQL.

Error body: {"error": "...", "detail": [{"loc": [...], "field": "events[3].type", "msg": "..."}]}.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.api.runtime import Runtime
from tests.conftest import T0
from tests.helpers import MIN, iso

SERVED = iso(T0)
OCCURRED = iso(T0 + MIN)
NAIVE = "2026-11-02T12:00:00"  # no offset
KNOWN_USE_CASES = "['eta', 'fraud', 'recsys', 'recsys_ignore', 'recsys_majority']"
RECSYS_TYPES = "['add_to_cart', 'click', 'purchase', 'rating', 'return', 'thumbs']"
ALL_TYPES = (
    "['add_to_cart', 'chargeback', 'click', 'duration_correction', 'fraud_confirmed', "
    "'purchase', 'rating', 'return', 'thumbs', 'trip_completed']"
)


def prediction(prediction_id: str, **fields: Any) -> dict[str, Any]:
    return {"prediction_id": prediction_id, "use_case": "recsys", "served_at": SERVED, **fields}


def event(event_id: str, prediction_id: str = "P", type: str = "click", **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "prediction_id": prediction_id, "type": type, "occurred_at": OCCURRED, **fields}


def predictions(*records: dict[str, Any]) -> dict[str, Any]:
    return {"predictions": list(records)}


def events(*records: dict[str, Any]) -> dict[str, Any]:
    return {"events": list(records)}


GOOD_PREDICTIONS = [prediction("A"), prediction("B")]  # the valid records ahead of a bad one at index 2
GOOD_EVENTS = [event("E-A"), event("E-B", type="purchase")]


async def post(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    """bytes are sent as they are (malformed JSON, empty body); anything else as JSON."""
    if isinstance(body, bytes):
        return await client.post(path, content=body, headers={"content-type": "application/json"})
    return await client.post(path, json=body)


def problem(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """Check the status and the error body's shape; returns the first detail entry."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == error
    assert body["detail"], body
    for entry in body["detail"]:
        assert isinstance(entry["loc"], list), entry
        assert entry["loc"][0] == "body", entry
        assert isinstance(entry["field"], str), entry
        assert entry["field"], entry
        assert isinstance(entry["msg"], str), entry
        assert entry["msg"], entry
    first: dict[str, Any] = body["detail"][0]
    return first


def ids_in(body: Any, key: str) -> set[str]:
    """Every string under `key` in the request body, however nested."""
    if isinstance(body, dict):
        found = {body[key]} if isinstance(body.get(key), str) else set()
        for value in body.values():
            found |= ids_in(value, key)
        return found
    if isinstance(body, list):
        return set().union(*(ids_in(item, key) for item in body))
    return set()


async def served(client: httpx.AsyncClient) -> int:
    response = await client.get("/v1/metrics/feedback-loop")
    assert response.status_code == 200, response.text
    return sum(figures["served"] for figures in response.json()["use_cases"].values())


async def recsys_events(client: httpx.AsyncClient) -> dict[str, int]:
    response = await client.get("/v1/metrics/feedback-loop", params={"use_case": "recsys"})
    assert response.status_code == 200, response.text
    counts: dict[str, int] = response.json()["use_cases"]["recsys"]["events"]
    return counts


async def dataset(client: httpx.AsyncClient) -> str:
    response = await client.get("/v1/datasets/recsys")
    assert response.status_code == 200, response.text
    return response.text


async def lineage(client: httpx.AsyncClient, prediction_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/predictions/{prediction_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def assert_no_predictions(client: httpx.AsyncClient, prediction_ids: set[str], stored: int = 0) -> None:
    for prediction_id in sorted(prediction_ids):
        response = await client.get(f"/v1/predictions/{prediction_id}")
        assert response.status_code == 404, f"{prediction_id} was stored: {response.text}"
    assert await dataset(client) == ""
    assert await served(client) == stored


async def assert_no_events(client: httpx.AsyncClient, prediction_id: str = "P") -> None:
    found = await lineage(client, prediction_id)
    assert found["events"] == []
    assert found["label"] is None
    assert await dataset(client) == ""
    assert await recsys_events(client) == {}


# -- predictions ---------------------------------------------------------------------------


BAD_PREDICTIONS = [
    pytest.param(prediction("P", served_at=NAIVE), 422, "served_at", "timezone", id="naive-served_at"),
    pytest.param(
        predictions(*GOOD_PREDICTIONS, prediction("C", served_at=NAIVE)),
        422,
        "predictions[2].served_at",
        "timezone",
        id="batch-naive-served_at",
    ),
    pytest.param(prediction("P", use_case="nope"), 422, "use_case", "unknown use case 'nope'", id="unknown-use_case"),
    pytest.param(
        predictions(*GOOD_PREDICTIONS, prediction("C", use_case="nope")),
        422,
        "predictions[2].use_case",
        "unknown use case 'nope'",
        id="batch-unknown-use_case",
    ),
    pytest.param(
        {**prediction("P"), "prediction_id": 42}, 422, "prediction_id", "valid string", id="prediction_id-number"
    ),
    pytest.param(
        predictions(*GOOD_PREDICTIONS, {**prediction("C"), "prediction_id": 42}),
        422,
        "predictions[2].prediction_id",
        "valid string",
        id="batch-prediction_id-number",
    ),
    pytest.param(prediction("P", features=[1, 2]), 422, "features", "valid dictionary", id="features-list"),
    pytest.param(prediction("P", served_at=1700000000), 422, "served_at", "RFC 3339", id="served_at-number"),
    # Found by tests/api/test_fuzz.py: each was a 500.
    pytest.param(
        prediction("P", served_at="0001-01-01T00:00:00+00:10"), 422, "served_at", "years 1 to 9999", id="year-0-in-utc"
    ),
    pytest.param(
        prediction("P", served_at="9999-12-31T23:59:00Z"),
        422,
        "served_at",
        "after the year 9999",
        id="window-past-9999",
    ),
    pytest.param(
        predictions(*GOOD_PREDICTIONS, prediction("C", features=[1, 2])),
        422,
        "predictions[2].features",
        "valid dictionary",
        id="batch-features-list",
    ),
    pytest.param(prediction("P", colour="red"), 422, "colour", "Extra inputs", id="extra-field"),
    pytest.param(
        predictions(*GOOD_PREDICTIONS, prediction("C", colour="red")),
        422,
        "predictions[2].colour",
        "Extra inputs",
        id="batch-extra-field-in-record",
    ),
    pytest.param(
        {**predictions(*GOOD_PREDICTIONS), "colour": "red"}, 422, "colour", "Extra inputs", id="batch-extra-top-level"
    ),
    pytest.param({"use_case": "recsys", "served_at": SERVED}, 422, "prediction_id", "required", id="missing-id"),
    pytest.param(predictions(), 422, "predictions", "at least one", id="empty-batch"),
    pytest.param({"predictions": prediction("P")}, 422, "predictions", "valid list", id="batch-not-a-list"),
    pytest.param([prediction("P")], 422, "body", "valid dictionary", id="json-array-body"),
    pytest.param(b"null", 422, "body", "valid dictionary", id="json-null-body"),
    pytest.param(b'{"prediction_id": "P",', 400, "body", "not valid JSON", id="malformed-json"),
    pytest.param(b"", 400, "body", "not valid JSON", id="empty-body"),
]


@pytest.mark.parametrize(("body", "status", "field", "reason"), BAD_PREDICTIONS)
async def test_bad_prediction_rejected_and_nothing_stored(
    client: httpx.AsyncClient, body: Any, status: int, field: str, reason: str
) -> None:
    detail = problem(
        await post(client, "/v1/predictions", body), status, "malformed_json" if status == 400 else "validation_error"
    )
    assert detail["field"] == field
    assert reason in detail["msg"]
    await assert_no_predictions(client, ids_in(body, "prediction_id") if not isinstance(body, bytes) else {"P"})


async def test_unknown_use_case_lists_the_known_ones(client: httpx.AsyncClient) -> None:
    detail = problem(await post(client, "/v1/predictions", prediction("P", use_case="nope")), 422, "validation_error")
    assert detail["loc"] == ["body", "use_case"]
    assert detail["msg"] == f"unknown use case 'nope'; known: {KNOWN_USE_CASES}"
    await assert_no_predictions(client, {"P"})


async def test_oversize_batch_rejected_before_anything_is_stored(client: httpx.AsyncClient, runtime: Runtime) -> None:
    limit = runtime.settings.max_batch
    assert limit == 10_000
    body = predictions(*(prediction(f"P{i}") for i in range(limit + 1)))
    detail = problem(await post(client, "/v1/predictions", body), 413, "batch_too_large")
    assert detail["field"] == "predictions"
    assert detail["loc"] == ["body", "predictions"]
    assert detail["msg"] == f"{limit + 1} records; at most {limit}"
    await assert_no_predictions(client, {"P0", "P1", f"P{limit // 2}", f"P{limit}"})


async def test_every_bad_record_of_a_batch_is_named(client: httpx.AsyncClient) -> None:
    body = predictions(
        prediction("A", served_at=NAIVE), prediction("B"), {**prediction("C"), "prediction_id": 7, "colour": 1}
    )
    response = await post(client, "/v1/predictions", body)
    problem(response, 422, "validation_error")
    assert sorted(d["field"] for d in response.json()["detail"]) == [
        "predictions[0].served_at",
        "predictions[2].colour",
        "predictions[2].prediction_id",
    ]
    await assert_no_predictions(client, {"A", "B"})


# -- events --------------------------------------------------------------------------------


BAD_EVENTS = [
    pytest.param(event("E1", occurred_at=NAIVE), 422, "occurred_at", "timezone", id="naive-occurred_at"),
    pytest.param(
        events(*GOOD_EVENTS, event("E1", occurred_at=NAIVE)),
        422,
        "events[2].occurred_at",
        "timezone",
        id="batch-naive-occurred_at",
    ),
    pytest.param(
        event("E1", type="bogus"),
        422,
        "type",
        f"unknown event type 'bogus' for use case 'recsys'; allowed: {RECSYS_TYPES}",
        id="unknown-type",
    ),
    pytest.param(
        events(event("E1", type="bogus")),
        422,
        "events[0].type",
        f"unknown event type 'bogus' for use case 'recsys'; allowed: {RECSYS_TYPES}",
        id="batch-of-one-unknown-type",
    ),
    pytest.param(
        events(*GOOD_EVENTS, event("E1", type="trip_completed", value=600)),
        422,
        "events[2].type",
        "unknown event type 'trip_completed' for use case 'recsys'",
        id="batch-type-of-another-use-case",
    ),
    pytest.param(
        event("E1", type="rating", value="great"), 422, "value", "rating value must be a number", id="rating-string"
    ),
    pytest.param(
        events(*GOOD_EVENTS, event("E1", type="rating", value="great")),
        422,
        "events[2].value",
        "rating value must be a number",
        id="batch-rating-string",
    ),
    pytest.param(
        event("E1", type="thumbs", value="meh"),
        422,
        "value",
        "thumbs value must be one of ['down', 'up']",
        id="thumbs-unknown-value",
    ),
    pytest.param(event("E1", type="rating"), 422, "value", "rating value must be a number", id="rating-no-value"),
    pytest.param({**event("E1"), "prediction_id": 42}, 422, "prediction_id", "valid string", id="prediction_id-number"),
    pytest.param(event("E1", actor=42), 422, "actor", "valid string", id="actor-number"),
    pytest.param(
        events(*GOOD_EVENTS, event("E1", actor=42)), 422, "events[2].actor", "valid string", id="batch-actor-number"
    ),
    pytest.param(event("E1", payload=[1]), 422, "payload", "valid dictionary", id="payload-list"),
    pytest.param(event("E1", value={"a": 1}), 422, "value", "boolean, a number or a string", id="value-object"),
    pytest.param(
        events(*GOOD_EVENTS, event("E1", value=[1])), 422, "events[2].value", "a number", id="batch-value-list"
    ),
    pytest.param(event("E1", occurred_at=1700000000), 422, "occurred_at", "RFC 3339", id="occurred_at-number"),
    pytest.param(  # found by tests/api/test_fuzz.py: a 500
        event("E1", occurred_at="0001-01-01T00:00:00+00:10"), 422, "occurred_at", "years 1 to 9999", id="year-0-in-utc"
    ),
    pytest.param(event("E1", colour="red"), 422, "colour", "Extra inputs", id="extra-field"),
    pytest.param(
        events(*GOOD_EVENTS, event("E1", colour="red")),
        422,
        "events[2].colour",
        "Extra inputs",
        id="batch-extra-field-in-record",
    ),
    pytest.param({**events(*GOOD_EVENTS), "colour": "red"}, 422, "colour", "Extra inputs", id="batch-extra-top-level"),
    pytest.param(events(), 422, "events", "at least one", id="empty-batch"),
    pytest.param([event("E1")], 422, "body", "valid dictionary", id="json-array-body"),
    pytest.param(b'{"event_id": ', 400, "body", "not valid JSON", id="malformed-json"),
    pytest.param(b"", 400, "body", "not valid JSON", id="empty-body"),
]


@pytest.mark.parametrize(("body", "status", "field", "reason"), BAD_EVENTS)
async def test_bad_event_rejected_and_nothing_stored(
    client: httpx.AsyncClient, body: Any, status: int, field: str, reason: str
) -> None:
    assert (await post(client, "/v1/predictions", prediction("P"))).status_code == 202
    detail = problem(
        await post(client, "/v1/events", body), status, "malformed_json" if status == 400 else "validation_error"
    )
    assert detail["field"] == field
    assert reason in detail["msg"]
    await assert_no_events(client)
    assert await served(client) == 1


BAD_ORPHAN_EVENTS = [
    pytest.param(
        event("E1", type="bogus"),
        "type",
        f"unknown event type 'bogus' for any use case (its prediction is not known yet); allowed: {ALL_TYPES}",
        id="unknown-type",
    ),
    pytest.param(
        events(*GOOD_EVENTS, event("E1", type="bogus")),
        "events[2].type",
        f"unknown event type 'bogus' for any use case (its prediction is not known yet); allowed: {ALL_TYPES}",
        id="batch-unknown-type",
    ),
    pytest.param(event("E1", type="rating", value="great"), "value", "rating value must be a number", id="rating"),
    pytest.param(
        events(*GOOD_EVENTS, event("E1", type="trip_completed", value="slow")),
        "events[2].value",
        "trip_completed value must be a number",
        id="batch-natural-value",
    ),
]


@pytest.mark.parametrize(("body", "field", "msg"), BAD_ORPHAN_EVENTS)
async def test_bad_event_for_unknown_prediction_rejected(
    client: httpx.AsyncClient, body: Any, field: str, msg: str
) -> None:
    """Not joinable yet, so checked against every use case; no orphan is kept to join later."""
    detail = problem(await post(client, "/v1/events", body), 422, "validation_error")
    assert detail["field"] == field
    assert detail["msg"] == msg
    assert (await client.get("/v1/predictions/P")).status_code == 404
    assert (await post(client, "/v1/predictions", prediction("P"))).status_code == 202
    await assert_no_events(client)


# -- conflicts -----------------------------------------------------------------------------


def conflict(response: httpx.Response, field: str, ids: list[str]) -> None:
    detail = problem(response, 409, "conflict")
    assert detail["field"] == field
    assert detail["loc"] == ["body", field]
    assert detail["ids"] == ids
    assert "different content" in detail["msg"]


@pytest.mark.parametrize(
    "resent",
    [
        pytest.param(prediction("P", model="other"), id="single"),
        pytest.param(predictions(prediction("N"), prediction("P", served_at=iso(T0 + MIN))), id="batch"),
    ],
)
async def test_prediction_id_resent_with_other_content(client: httpx.AsyncClient, resent: dict[str, Any]) -> None:
    original = prediction("P", model="ranker", features={"x": 1})
    assert (await post(client, "/v1/predictions", original)).status_code == 202
    before = await lineage(client, "P")

    conflict(await post(client, "/v1/predictions", resent), "prediction_id", ["P"])

    after = await lineage(client, "P")
    assert after == before
    assert after["prediction"]["model"] == "ranker"
    assert after["prediction"]["features"] == {"x": 1}
    await assert_no_predictions(client, ids_in(resent, "prediction_id") - {"P"}, stored=1)
    duplicate = await post(client, "/v1/predictions", original)  # the same content again is still a duplicate
    assert duplicate.status_code == 202
    assert duplicate.json() == {"accepted": 0, "duplicates": 1}


@pytest.mark.parametrize(
    "resent",
    [
        pytest.param(event("E1", type="purchase"), id="single"),
        pytest.param(events(event("E2"), event("E1", actor="user:7")), id="batch"),
    ],
)
async def test_event_id_resent_with_other_content(client: httpx.AsyncClient, resent: dict[str, Any]) -> None:
    assert (await post(client, "/v1/predictions", prediction("P"))).status_code == 202
    assert (await post(client, "/v1/events", event("E1", actor="user:42"))).status_code == 202
    before = await lineage(client, "P")
    assert [(e["event_id"], e["type"], e["actor"]) for e in before["events"]] == [("E1", "click", "user:42")]

    conflict(await post(client, "/v1/events", resent), "event_id", ["E1"])

    after = await lineage(client, "P")
    assert after["events"] == before["events"]
    assert after["label"] == before["label"]
    assert await recsys_events(client) == {"click": 1}


async def test_id_repeated_within_one_request_with_other_content(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/predictions", json=predictions(prediction("Q"), prediction("Q", model="z")))
    assert response.status_code == 409
    detail = response.json()["detail"][0]
    assert (detail["field"], detail["ids"]) == ("prediction_id", ["Q"])
    assert detail["msg"] == "repeated in this request with different content"
    assert (await client.get("/v1/predictions/Q")).status_code == 404
