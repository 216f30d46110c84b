"""Feedback-loop metrics latency: GET /v1/metrics/feedback-loop (all use cases, one use case, the
last 7 days) and the window advisor, GET /v1/advice/window (recsys, fraud), with N events in the
store, beside GET /healthz on the same server in the same run.

The store is filled directly, not through the API: N joined events over 30 days of served hours
for the three bundled use cases, and the hourly counters, delay histograms and maxima the labeler
would have kept for them (stat_counters, delay_buckets and their daily rollup, delay_max), computed
while generating. On SQLite, and on a scratch PostgreSQL database (COPY) when `postgres` is set.
The endpoint's event counts per type are checked once against what was inserted."""

from __future__ import annotations

import asyncio
import io
import math
import random
import sqlite3
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.export import migrate as migrate_sqlite
from bench.ingest import server
from bench.kafka_env import ADMIN_DSN
from bench.report import Figure
from service.config import Settings
from service.core.histogram import bucket_of
from service.store import migrate
from service.store.database import create_engine
from service.store.stats import by_day

HOURS = 30 * 24
CHUNK = 100_000
POOL = 1 << 16  # distinct delays per use case
REQUESTS = 200
BUDGET_S = 10.0  # per endpoint variant: fewer than REQUESTS (at least 20) if they are slow
EPOCH = datetime(1970, 1, 1)  # naive UTC, as SQLite keeps times

EVENT_COLUMNS = (
    "event_id",
    "prediction_id",
    "type",
    "occurred_at",
    "value",
    "actor",
    "content_hash",
    "received_at",
    "disposition",
)


@dataclass(frozen=True)
class UseCase:
    name: str
    share: float  # of the predictions
    types: tuple[tuple[str, str, float], ...]  # (event type, kind, share of the events)
    delay: tuple[float, float]  # log-normal mu, sigma of the feedback delay in seconds
    seal_s: float  # window + allowed lateness: later events are too late
    binary: bool


# The bundled policies (service/policies/default.yaml), five event types for recsys.
USE_CASES = (
    UseCase(
        "recsys",
        0.6,
        (
            ("click", "positive", 0.55),
            ("add_to_cart", "positive", 0.15),
            ("purchase", "positive", 0.1),
            ("return", "negative", 0.05),
            ("rating", "explicit", 0.15),
        ),
        (3.5, 1.2),  # median ~33 s, a long tail
        4200.0,
        True,
    ),
    UseCase(
        "eta",
        0.25,
        (("trip_completed", "natural", 0.9), ("duration_correction", "explicit", 0.1)),
        (7.3, 0.5),  # ~25 minutes
        21600.0,
        False,
    ),
    UseCase(
        "fraud",
        0.15,
        (("chargeback", "positive", 0.7), ("fraud_confirmed", "explicit", 0.3)),
        (12.5, 1.0),  # ~3 days
        90 * 86400.0,
        True,
    ),
)


@dataclass
class Stats:
    """What the labeler would have counted, keyed like the stat tables."""

    counters: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)
    buckets: Counter[tuple[str, str, int, int]] = field(default_factory=Counter)
    maxima: dict[tuple[str, str, int], float] = field(default_factory=dict)

    def events(self, use_case: str | None = None, hour_from: int | None = None) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (uc, name, event_type, hour), n in self.counters.items():
            if name == "events" and use_case in (None, uc) and (hour_from is None or hour >= hour_from):
                out[event_type] += n
        return dict(out)


def generate(n_events: int, now: datetime, stats: Stats, seed: int = 11) -> Iterator[list[tuple[Any, ...]]]:
    """Chunks of event rows; stats gets the counters of every prediction and event generated.
    Predictions get 0, 1 or 2 events (mean 1), so there are about as many predictions as events."""
    rng = random.Random(seed)
    rand = rng.random
    last_hour = int(now.timestamp() // 3600)
    first_hour = last_hour - HOURS + 1
    now_s = now.timestamp()
    by_share = [uc for uc in USE_CASES for _ in range(round(100 * uc.share))]
    type_tables = {uc.name: [t for t in uc.types for _ in range(round(100 * t[2]))] for uc in USE_CASES}
    # Per use case, a pool of delays with their buckets (0.5% of them negative: clock skew).
    pools: dict[str, list[tuple[float, float, int]]] = {}
    for uc in USE_CASES:
        delays = [-rand() * 5 if rand() < 0.005 else rng.lognormvariate(*uc.delay) for _ in range(POOL)]
        pools[uc.name] = [(delay, max(0.0, delay), bucket_of(max(0.0, delay))) for delay in delays]
    # SQLAlchemy's SQLite DATETIME text, "YYYY-MM-DD HH:MM:SS.ffffff" (naive UTC), built from parts.
    dates: dict[int, str] = {}
    clock = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
    maxima = stats.maxima
    chunk: list[tuple[Any, ...]] = []
    counted: list[tuple[str, str, str, int]] = []  # counter keys, added up per chunk (in C)
    bucketed: list[tuple[str, str, int, int]] = []
    made, prediction = 0, 0
    while made < n_events:
        uc = by_share[int(rand() * 100)]
        name = uc.name
        hour = first_hour + int(rand() * HOURS)
        served_s = hour * 3600 + rand() * 3600
        prediction_id = f"{name}-{prediction:09d}"
        prediction += 1
        counted.append((name, "served", "", hour))
        r = rand()
        k = min(0 if r < 0.2 else 1 if r < 0.8 else 2, n_events - made)
        kinds: set[str] = set()
        types = type_tables[name]
        pool = pools[name]
        for _ in range(k):
            event_type, kind, _share = types[int(rand() * 100)]
            delay, d, bucket = pool[int(rand() * POOL)]
            if delay < 0:
                counted.append((name, "clock_skew", event_type, hour))
            bucketed.append((name, event_type, hour, bucket))
            key = (name, event_type, hour)
            if d > maxima.get(key, -1.0):
                maxima[key] = d
            counted.append((name, "events", event_type, hour))
            if delay > uc.seal_s:
                counted.append((name, "too_late", event_type, hour))
                disposition = "too_late"
            else:
                disposition = "counted"
                kinds.add(kind)
            at = served_s + delay
            second = int(at)
            day, of_day = divmod(second, 86400)
            date = dates.get(day) or dates.setdefault(day, (EPOCH + timedelta(days=day)).date().isoformat())
            occurred = f"{date} {clock[of_day]}.{int((at - second) * 1e6):06d}"
            chunk.append(
                (
                    f"e{made:010d}",
                    prediction_id,
                    event_type,
                    occurred,
                    (1 + made % 5) if event_type == "rating" else None,
                    f"user:{made % 997}",
                    f"{made:064x}",
                    occurred,
                    disposition,
                )
            )
            made += 1
        if "explicit" in kinds:
            label = "explicit"
        elif "positive" in kinds or "negative" in kinds:
            label = "behavioral"
        elif "natural" in kinds:
            label = "natural"
        else:
            label = "implicit_negative" if uc.binary else ""
        final = served_s + uc.seal_s < now_s
        if label and (final or label != "implicit_negative"):
            counted.append((name, f"labels_{label}", "", hour))
            if len(kinds) == 2:
                counted.append((name, "label_changes", "", hour))
                counted.append((name, "revisions", "", hour))
        if final:
            counted.append((name, "finalized", "", hour))
            if not label:
                counted.append((name, "expired", "", hour))
        if len(chunk) >= CHUNK or made >= n_events:
            stats.counters.update(counted)
            stats.buckets.update(bucketed)
            counted, bucketed = [], []
            yield chunk
            chunk = []


def _stat_rows(stats: Stats) -> dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
    return {
        "stat_counters": (
            ("use_case", "name", "event_type", "served_hour", "value"),
            [(*k, v) for k, v in sorted(stats.counters.items()) if v],
        ),
        "delay_buckets": (
            ("use_case", "event_type", "served_hour", "bucket", "count"),
            [(*k, v) for k, v in sorted(stats.buckets.items())],
        ),
        "delay_buckets_daily": (
            ("use_case", "event_type", "served_day", "bucket", "count"),
            [(*k, v) for k, v in sorted(by_day(stats.buckets).items())],
        ),
        "delay_max": (
            ("use_case", "event_type", "served_hour", "max_s"),
            [(*k, v) for k, v in sorted(stats.maxima.items())],
        ),
    }


def _csv(rows: list[tuple[Any, ...]]) -> bytes:
    """COPY text in CSV format; no field holds a comma, quote or newline. Times in UTC."""
    return "".join(
        f"{r[0]},{r[1]},{r[2]},{r[3]}+00,{'' if r[4] is None else r[4]},{r[5]},{r[6]},{r[7]}+00,{r[8]}\n" for r in rows
    ).encode()


async def fill(db: Path, pg_dsn: str | None, n_events: int, now: datetime) -> Stats:
    """Insert the events and stat rows into the migrated SQLite file (and PostgreSQL database)."""
    stats = Stats()
    lite = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    pg = await asyncpg.connect(pg_dsn) if pg_dsn else None
    try:
        lite.execute("PRAGMA journal_mode=OFF")  # a bulk load: no rollback journal, no fsync
        lite.execute("PRAGMA synchronous=OFF")
        lite.execute("PRAGMA cache_size=-262144")
        lite.execute("BEGIN")
        insert = f"INSERT INTO events ({','.join(EVENT_COLUMNS)}) VALUES ({','.join('?' * len(EVENT_COLUMNS))})"
        for chunk in generate(n_events, now, stats):
            if pg is not None:  # PostgreSQL loads this chunk while SQLite takes it in this thread
                copy = asyncio.ensure_future(
                    pg.copy_to_table("events", source=io.BytesIO(_csv(chunk)), columns=EVENT_COLUMNS, format="csv")
                )
                await asyncio.to_thread(lite.executemany, insert, chunk)
                await copy
            else:
                lite.executemany(insert, chunk)
        for table, (columns, rows) in _stat_rows(stats).items():
            lite.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({','.join('?' * len(columns))})", rows)
            if pg is not None:
                await pg.copy_records_to_table(table, records=rows, columns=columns)
        lite.execute("COMMIT")
        lite.execute("PRAGMA journal_mode=WAL")  # what the service sets on every connection
        if pg is not None:
            await pg.execute("VACUUM ANALYZE stat_counters, delay_buckets, delay_buckets_daily, delay_max")
            await pg.execute("ANALYZE events")
    finally:
        lite.close()
        if pg is not None:
            await pg.close()
    return stats


# -- scratch PostgreSQL database --------------------------------------------------------------


async def _create_pg() -> tuple[str, str]:
    name = f"labelloop_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = f"{ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    engine = create_engine(dsn.replace("postgresql://", "postgresql+asyncpg://"), application_name="labelloop-bench")
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    return name, dsn


async def _drop_pg(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# -- measuring ----------------------------------------------------------------------------------


def latencies(client: httpx.Client, path: str) -> list[float]:
    """Sequential requests, in ms: REQUESTS of them, or as many as BUDGET_S allows (at least 20)."""
    for _ in range(3):  # warm-up: connections, plans, caches
        client.get(path).raise_for_status()
    out: list[float] = []
    deadline = time.perf_counter() + BUDGET_S
    while len(out) < REQUESTS and (len(out) < 20 or time.perf_counter() < deadline):
        started = time.perf_counter()
        response = client.get(path)
        out.append(1000 * (time.perf_counter() - started))
        response.raise_for_status()
    return sorted(out)


def _p(sorted_ms: list[float], q: float) -> float:
    """The median, or the nearest-rank q-quantile."""
    if q == 0.5:
        return statistics.median(sorted_ms)
    return sorted_ms[min(len(sorted_ms) - 1, math.ceil(q * len(sorted_ms)) - 1)]


def check(client: httpx.Client, stats: Stats, since: datetime, backend: str) -> None:
    """The endpoint's event counts per use case and type, from the counters and from the delay
    histograms, equal the inserted ones, with and without `since`."""
    hour_from = int(since.timestamp() // 3600)
    for params, hours in (({}, None), ({"since": since.isoformat()}, hour_from)):
        report = client.get("/v1/metrics/feedback-loop", params=params).raise_for_status().json()
        for uc in USE_CASES:
            figures, expected = report["use_cases"][uc.name], stats.events(uc.name, hours)
            delays = {event_type: d["count"] for event_type, d in figures["feedback_delay"].items()}
            if figures["events"] != expected or delays != expected:
                raise AssertionError(
                    f"{backend} {params}: {uc.name} events {figures['events']}, delays {delays}, inserted {expected}"
                )


ADVISED = ("recsys", "fraud")  # four event types, an hour's horizon; two, 90 days


def check_advice(client: httpx.Client, stats: Stats, backend: str) -> None:
    """Every ended served hour is a cohort, and no estimate rests on more events than were inserted."""
    for use_case in ADVISED:
        advice = client.get("/v1/advice/window", params={"use_case": use_case}).raise_for_status().json()
        inserted = stats.events(use_case)
        for event_type, figures in advice["event_types"].items():
            sample = figures["sample"]
            if sample["cohorts"] != HOURS - 1 or sample["positives"] > inserted.get(event_type, 0):
                raise AssertionError(f"{backend}: {use_case} {event_type} advice on {sample}, inserted {inserted}")


def measure(url: str, stats: Stats, since: datetime, scenario: str, label: str) -> list[Figure]:
    figures: list[Figure] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        check(client, stats, since, scenario)
        check_advice(client, stats, scenario)
        healthz = latencies(client, "/healthz")
        figures += [
            Figure(scenario, "GET /healthz p50", _p(healthz, 0.5), "ms"),
            Figure(scenario, "GET /healthz p99", _p(healthz, 0.99), "ms"),
        ]
        variants = (
            ("", "all use cases"),
            ("?use_case=recsys", "use_case=recsys"),
            (f"?since={since.isoformat().replace('+00:00', 'Z')}", "since 7 days ago"),
        )
        # The window advisor reads the same tables: served counts and delay histograms by hour.
        # The advisor has no latency target: it is read once a minute per use case (p_flip's curve).
        paths = [(f"/v1/metrics/feedback-loop{q}", f"/v1/metrics/feedback-loop, {w}", "< 50 ms") for q, w in variants]
        paths += [(f"/v1/advice/window?use_case={uc}", f"/v1/advice/window, use_case={uc}", "") for uc in ADVISED]
        for path, what, target in paths:
            ms = latencies(client, path)
            for q, name in ((0.5, "p50"), (0.99, "p99")):
                figures.append(
                    Figure(
                        scenario,
                        f"GET {what}, {name} ({label}, {len(ms)} requests)",
                        _p(ms, q),
                        "ms",
                        f"/healthz {name}",
                        _p(healthz, q),
                        target,
                    )
                )
    return figures


def scenario(workdir: Path, n_events: int, postgres: bool = True) -> list[Figure]:
    now = datetime.now(UTC)
    since = (now - timedelta(days=7)).replace(microsecond=0)
    db = workdir / "metrics.db"
    db.unlink(missing_ok=True)
    migrate_sqlite(db)
    pg = asyncio.run(_create_pg()) if postgres else None
    try:
        started = time.perf_counter()
        stats = asyncio.run(fill(db, pg[1] if pg else None, n_events, now))
        rows = {table: len(r) for table, (_, r) in _stat_rows(stats).items()}
        print(
            f"metrics: filled {n_events:,} events, {rows} in {time.perf_counter() - started:.1f} s"
            f"{' (SQLite and PostgreSQL)' if pg else ''}",
            flush=True,
        )
        conn = sqlite3.connect(db)
        try:
            stored = dict(conn.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
        finally:
            conn.close()
        if stored != stats.events() or sum(stored.values()) != n_events:
            raise AssertionError(f"events stored {stored}, generated {stats.events()}")
        label = f"{n_events:,} events, {sum(rows.values()):,} stat rows"
        return on_each_store(
            workdir, db, pg, "feedback-loop metrics", lambda url, name: measure(url, stats, since, name, label)
        )
    finally:
        discard(db, pg)


def on_each_store(
    workdir: Path, db: Path, pg: tuple[str, str] | None, scenario: str, run: Callable[[str, str], list[Figure]]
) -> list[Figure]:
    """run(url, scenario name) against a server on the SQLite file, then (pg: its scratch database
    and DSN) one on PostgreSQL."""
    with server(workdir, db=db) as url:
        figures = run(url, f"{scenario} (embedded, SQLite)")
    if pg:
        url_pg = pg[1].replace("postgresql://", "postgresql+asyncpg://")
        with server(workdir, settings=Settings(database_url=url_pg, migrate_on_start=False)) as url:
            figures += run(url, f"{scenario} (PostgreSQL)")
    return figures


def discard(db: Path, pg: tuple[str, str] | None) -> None:
    """Drop the scratch PostgreSQL database and remove the SQLite files."""
    if pg:
        asyncio.run(_drop_pg(pg[0]))
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)
