"""Ingest over HTTP: batches of 1,000 beside a raw SQLite insert of the same rows with the same
durability (WAL, synchronous=FULL, one transaction per 1,000); single-record requests, embedded on
SQLite and PostgreSQL and in Kafka mode, beside a bare FastAPI route that reads and validates the
same JSON and stores nothing (bench/bare.py), all driven by the same aiohttp load generator."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson

from bench.kafka_env import settings_env
from bench.load import bodies
from bench.report import Figure
from service.config import Settings
from tests.kafka.broker import free_port


@contextmanager
def server(logs: Path, db: Path | None = None, settings: Settings | None = None) -> Iterator[str]:
    """`labelloop serve` on a free port: embedded on the SQLite file `db`, or with `settings`."""
    with server_process(logs, db, settings) as (url, _):
        yield url


@contextmanager
def server_process(
    logs: Path, db: Path | None = None, settings: Settings | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """As server(), yielding the process too (to watch its memory)."""
    port = free_port()
    if settings is not None:
        env = settings_env(settings.model_copy(update={"port": port, "log_level": "warning"}))
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
        env |= {"LABELLOOP_DATABASE_URL": f"sqlite+aiosqlite:///{db}", "LABELLOOP_PORT": str(port)}
        env["LABELLOOP_LOG_LEVEL"] = "warning"
    with (logs / "serve.log").open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def load(url: str, mode: str, n: int, concurrency: int = 8) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.load", url, mode, "--n", str(n), "--concurrency", str(concurrency)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def raw_sqlite(path: Path, n: int) -> float:
    """Rows/s of sqlite3 inserting the same predictions and events from the same request bodies
    the batch scenario posts, parsed with orjson, 1,000 per transaction (the issue's reference:
    a raw executemany of the same rows with the JSON parse included)."""
    posted = [("p", b) for b in bodies("predictions", n, 1000)] + [("e", b) for b in bodies("events", n, 1000)]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE p (prediction_id TEXT UNIQUE, use_case TEXT, served_at TEXT, features TEXT, output TEXT)")
    db.execute("CREATE TABLE e (event_id TEXT UNIQUE, prediction_id TEXT, type TEXT, occurred_at TEXT, value TEXT)")
    started = time.perf_counter()
    for table, body in posted:
        if table == "p":
            rows = [
                (
                    r["prediction_id"],
                    r["use_case"],
                    r["served_at"],
                    orjson.dumps(r["features"]),
                    orjson.dumps(r["output"]),
                )
                for r in orjson.loads(body)["predictions"]
            ]
        else:
            rows = [
                (r["event_id"], r["prediction_id"], r["type"], r["occurred_at"], orjson.dumps(r.get("value")))
                for r in orjson.loads(body)["events"]
            ]
        db.execute("BEGIN")
        db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return 2 * n / elapsed


@contextmanager
def bare_route(logs: Path) -> Iterator[str]:
    """bench.bare on a free port: the same JSON read and validated, nothing stored."""
    port = free_port()
    with (logs / "bare.log").open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.bare", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)


def bare_single(logs: Path, n: int) -> dict[str, float]:
    """The bare route's rate for single-record requests, 32 concurrent: the ceiling of this stack."""
    with bare_route(logs) as url:
        result = load(url, "single", n, concurrency=SINGLE_CONCURRENCY)
    return {kind: result[kind]["requests_per_s"] for kind in ("predictions", "events")}


SINGLE_CONCURRENCY = 32
LATENCY_CONCURRENCY = 4


def single_figures(scenario: str, url: str, bare: dict[str, float], n: int) -> list[Figure]:
    """Single-record requests at 32 concurrent clients beside the bare route, and their p99 at 4."""
    busy = load(url, "single", n, concurrency=SINGLE_CONCURRENCY)
    light = load(url, "single", n // 2, concurrency=LATENCY_CONCURRENCY)
    figures = []
    for kind in ("predictions", "events"):
        figures += [
            Figure(
                scenario,
                f"single-record POST /v1/{kind}, {SINGLE_CONCURRENCY} concurrent",
                busy[kind]["requests_per_s"],
                "requests/s",
                "bare FastAPI route, same JSON",
                bare[kind],
                ">= 0.3x",
            ),
            Figure(scenario, f"single-record {kind} p99, {SINGLE_CONCURRENCY} concurrent", busy[kind]["p99_ms"], "ms"),
            Figure(
                scenario,
                f"single-record {kind} p99, {LATENCY_CONCURRENCY} concurrent",
                light[kind]["p99_ms"],
                "ms",
                target="<= 50 ms",
            ),
        ]
    return figures


def scenario(workdir: Path, n_batch: int, n_single: int) -> tuple[list[Figure], dict[str, float]]:
    """Embedded on SQLite; also returns the bare route's rates for the other modes' rows."""
    bare = bare_single(workdir, n_single)
    with server(workdir, db=workdir / "ingest.db") as url:
        healthz = load(url, "healthz", n_single)
        batches = load(url, "batches", n_batch)
    with server(workdir, db=workdir / "ingest-single.db") as url:
        singles = single_figures("ingest (embedded, SQLite)", url, bare, n_single)
    raw = raw_sqlite(workdir / "raw.db", n_batch)
    scenario = "ingest (embedded, SQLite)"
    figures = [
        Figure(scenario, "GET /healthz", healthz["requests_per_s"], "requests/s"),
        Figure(scenario, "bare route, single predictions (ceiling)", bare["predictions"], "requests/s"),
        Figure(scenario, "raw SQLite insert of the same rows, JSON parse included", raw, "rows/s"),
        Figure(
            scenario,
            f"batches of 1,000 ({2 * n_batch:,} records)",
            batches["records_per_s"],
            "records/s",
            "raw SQLite insert",
            raw,
            ">= 0.5x",
        ),
    ]
    return figures + singles, bare


def postgres_scenario(settings: Settings, workdir: Path, bare: dict[str, float], n_single: int) -> list[Figure]:
    """Embedded on PostgreSQL: settings without Kafka."""
    with server(workdir, settings=settings) as url:
        return single_figures("ingest (embedded, PostgreSQL)", url, bare, n_single)


def kafka_scenario(
    settings: Settings, workdir: Path, n_batch: int, bare: dict[str, float], n_single: int
) -> list[Figure]:
    """Kafka mode: the API validates and produces; 202 once the broker acknowledged."""
    with server(workdir, settings=settings) as url:
        healthz = load(url, "healthz", 1000)
        batches = load(url, "batches", n_batch)
        singles = single_figures("ingest (Kafka mode)", url, bare, n_single)
    return [
        Figure("ingest (Kafka mode)", "GET /healthz", healthz["requests_per_s"], "requests/s"),
        Figure(
            "ingest (Kafka mode)",
            f"batches of 1,000 ({2 * n_batch:,} records), acked by the broker",
            batches["records_per_s"],
            "records/s",
        ),
        *singles,
    ]
