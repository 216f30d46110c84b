"""The log of a real `labelloop serve`: JSON lines only, one per request, and none of what the
records carried (subject ids, feature values), whatever the requests did."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

from tests.conftest import T0
from tests.e2e._process import serve

SECRETS = ("user:secret-42", "jane@example.com", "4111111111111111")


def test_the_log_is_json_and_holds_no_personal_data(tmp_path: Path) -> None:
    prediction = {
        "prediction_id": "p1",
        "use_case": "recsys",
        "served_at": T0.isoformat(),
        "subject_id": SECRETS[0],
        "features": {"email": SECRETS[1], "card": SECRETS[2]},
    }
    with serve(tmp_path) as server, httpx.Client(base_url=server.base_url) as http:
        assert http.post("/v1/predictions", json=prediction).status_code == 202
        conflicting = {**prediction, "features": {"email": SECRETS[1], "card": "other"}}
        assert http.post("/v1/predictions", json=conflicting).status_code == 409
        bad_event = {"event_id": "e1", "prediction_id": "p1", "type": "clack", "actor": SECRETS[0]}
        assert http.post("/v1/events", json=bad_event).status_code == 422
        assert http.get(f"/v1/predictions/{prediction['prediction_id']}").status_code == 200
        assert http.get("/v1/datasets/recsys").status_code == 200
    text = server.stderr.read_text() + server.stdout.read_text()
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    # The start-up probes (/healthz) aside, one line per request, in order, with its route template.
    access = [line for line in lines if line["logger"] == "labelloop.access" and line["route"] != "/healthz"]
    assert [(a["method"], a["route"], a["status"]) for a in access] == [
        ("POST", "/v1/predictions", 202),
        ("POST", "/v1/predictions", 409),
        ("POST", "/v1/events", 422),
        ("GET", "/v1/predictions/{prediction_id}", 200),
        ("GET", "/v1/datasets/{use_case}", 200),
    ]
    assert len({a["request_id"] for a in access}) == len(access)
    for secret in SECRETS:
        assert secret not in text
