"""`labelloop serve` as a real process on SQLite, driven over real HTTP with the wall clock.

Policy: the bundled recsys use case with window 2 s and allowed lateness 2 s; the stream counts
as idle after 1 s, the sweeper runs every 200 ms and the allowed disorder is 500 ms, so a
prediction with no event gets its implicit negative about 2.5 s after serving.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from service.core.policy import BUNDLED_POLICIES
from tests.e2e._process import Server, clean_env, free_port, labelloop_command, serve, stop

POLL_TIMEOUT_S = 15.0


def _policies(path: Path) -> Path:
    bundled = yaml.safe_load(BUNDLED_POLICIES.read_text())
    recsys = {**bundled["use_cases"]["recsys"], "window": "2s", "allowed_lateness": "2s"}
    path.write_text(yaml.safe_dump({"version": 1, "use_cases": {"recsys": recsys}}))
    return path


def _server_env(workdir: Path) -> dict[str, str]:
    return {
        "database_url": f"sqlite+aiosqlite:///{workdir / 'labelloop.db'}",
        "policies": str(_policies(workdir / "policies.yaml")),
        "idle_timeout": "1s",
        "sweep_interval": "200ms",
        "allowed_disorder": "500ms",
        "log_level": "warning",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("serve")
    with serve(workdir, **_server_env(workdir)) as server:
        yield server
    # A failed window sweep is logged and retried, never raised: look for it in the log.
    assert "Traceback" not in server.stderr.read_text(), server.output()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        yield client


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0}


def _predict(http: httpx.Client, prediction_id: str) -> None:
    """Served now: served_at left to the server's clock."""
    _post(
        http,
        "/v1/predictions",
        {"prediction_id": prediction_id, "use_case": "recsys", "model": "ranker", "model_version": "7"},
    )


def _click(http: httpx.Client, prediction_id: str) -> str:
    event_id = _id("click")
    _post(
        http,
        "/v1/events",
        {"event_id": event_id, "prediction_id": prediction_id, "type": "click", "actor": "user:42"},
    )
    return event_id


def _lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line]


def _dataset(http: httpx.Client) -> dict[str, dict[str, Any]]:
    response = http.get("/v1/datasets/recsys")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return {row["prediction_id"]: row for row in _lines(response.text)}


def _lineage(http: httpx.Client, prediction_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/predictions/{prediction_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _poll(what: str, probe: Callable[[], Any], timeout: float = POLL_TIMEOUT_S) -> Any:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def test_click_gives_behavioral_positive_in_dataset(http: httpx.Client) -> None:
    pid = _id("P")
    _predict(http, pid)
    event_id = _click(http, pid)

    row = _dataset(http)[pid]
    assert (row["label"], row["label_kind"], row["model"], row["model_version"]) == (1, "behavioral", "ranker", "7")
    assert row["sources"] == [{"event_id": event_id, "type": "click", "actor": "user:42"}]
    assert row["status"] in ("provisional", "final")
    assert row["feedback_delay_s"] is not None
    assert row["feedback_delay_s"] >= 0


def test_idle_wall_clock_watermark_gives_implicit_negative(http: httpx.Client) -> None:
    pid = _id("N")
    _predict(http, pid)
    assert _lineage(http, pid)["label"] is None  # the 2 s window is still open

    label = _poll("implicit negative", lambda: _lineage(http, pid)["label"])
    assert (label["label"], label["label_kind"]) == (0, "implicit_negative")
    assert label["feedback_delay_s"] is None
    row = _dataset(http)[pid]
    assert (row["label"], row["label_kind"]) == (0, "implicit_negative")

    # Another 2 s (the allowed lateness) later the watermark passes the seal: the label is final.
    final = _poll("final label", lambda: (lbl := _lineage(http, pid)["label"])["status"] == "final" and lbl)
    assert (final["label"], final["label_kind"]) == (0, "implicit_negative")
    assert _dataset(http)[pid]["status"] == "final"
    final_only = http.get("/v1/datasets/recsys", params={"final_only": "true"})
    assert final_only.status_code == 200, final_only.text
    assert pid in {row["prediction_id"] for row in _lines(final_only.text)}


def test_lineage_has_prediction_events_and_history(http: httpx.Client) -> None:
    pid = _id("L")
    _predict(http, pid)
    event_id = _click(http, pid)

    body = _lineage(http, pid)
    assert body["prediction"]["prediction_id"] == pid
    assert body["prediction"]["use_case"] == "recsys"
    assert [(e["event_id"], e["type"], e["actor"], e["disposition"]) for e in body["events"]] == [
        (event_id, "click", "user:42", "counted")
    ]
    assert len(body["history"]) >= 1
    first = body["history"][0]
    assert (first["revision"], first["label"], first["kind"]) == (0, 1, "behavioral")
    assert body["label"]["label"] == 1

    missing = http.get(f"/v1/predictions/{_id('nope')}")
    assert missing.status_code == 404, missing.text


def _sample(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    for line in exposition.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match[3])
    return 0.0


def test_metrics_count_ingest_and_feedback_delay(http: httpx.Client) -> None:
    pid = _id("M")
    _predict(http, pid)
    _click(http, pid)

    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "labelloop_records_ingested_total" in text
    assert "labelloop_feedback_delay_seconds" in text
    assert _sample(text, "labelloop_records_ingested_total", record="predictions", outcome="accepted") >= 1
    assert _sample(text, "labelloop_records_ingested_total", record="events", outcome="accepted") >= 1
    assert _sample(text, "labelloop_feedback_delay_seconds_count", use_case="recsys", event_type="click") >= 1


def test_docs_and_openapi(http: httpx.Client) -> None:
    docs = http.get("/docs")
    assert docs.status_code == 200, docs.text
    assert "swagger" in docs.text.lower()
    spec = http.get("/openapi.json")
    assert spec.status_code == 200, spec.text
    paths = spec.json()["paths"]
    for path in ("/v1/predictions", "/v1/events", "/v1/datasets/{use_case}", "/v1/predictions/{prediction_id}"):
        assert path in paths


def test_sigterm_shuts_down_gracefully(tmp_path: Path) -> None:
    """SIGTERM runs the lifespan shutdown (sweeper cancelled, engine disposed). uvicorn re-raises
    the captured signal once it is done, so the status is "terminated by SIGTERM", not SIGKILL."""
    with serve(tmp_path, **{**_server_env(tmp_path), "log_level": "info"}) as server:
        started = time.monotonic()
        code = stop(server.process)
        elapsed = time.monotonic() - started
    stderr = server.stderr.read_text()
    assert code in (0, -signal.SIGTERM), server.output()
    assert elapsed < 5, f"shutdown took {elapsed:.1f} s"
    assert "Application shutdown complete" in stderr, server.output()
    assert "Traceback" not in stderr, server.output()


@pytest.mark.parametrize(
    ("case", "reason"),
    [("bad-window", "use_cases.recsys.window"), ("bad-yaml", "not valid YAML"), ("missing", "cannot read")],
)
def test_invalid_policy_file_fails_fast(tmp_path: Path, case: str, reason: str) -> None:
    path = tmp_path / "bad-policies.yaml"
    if case == "bad-window":
        policies = yaml.safe_load(_policies(path).read_text())
        policies["use_cases"]["recsys"]["window"] = "soon"
        path.write_text(yaml.safe_dump(policies))
    elif case == "bad-yaml":
        path.write_text("use_cases: [unclosed")
    env = clean_env(database_url=f"sqlite+aiosqlite:///{tmp_path / 'labelloop.db'}", policies=str(path))

    started = time.monotonic()
    result = subprocess.run(
        [*labelloop_command(), "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    elapsed = time.monotonic() - started

    assert result.returncode != 0, result.stdout + result.stderr
    assert elapsed < 15, f"took {elapsed:.1f} s to give up"
    assert str(path) in result.stderr, result.stderr
    assert reason in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "labelloop.db").exists()  # it stopped before touching the database
