"""Model-quality latency: GET /v1/metrics/quality (recsys daily over 30 days and hourly over the last
day, eta daily) with N labeled events in the store, beside GET /healthz on the same server.

As in bench/metrics_latency.py, the store is filled directly: N labeled, scored predictions over 30
days of served hours for the bundled use cases (recsys ranker 7 and 8, fraud-xgb 3, eta-gbm 2),
and the quality_sums and quality_bins rows the labeler would have kept for them (hourly and daily,
final or provisional by their seal), computed while generating with the service's own
service/core/quality.part(). On SQLite, and on a scratch PostgreSQL database when `postgres` is
set. The endpoint's counts per model version are checked once against what was generated."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.export import migrate as migrate_sqlite
from bench.metrics_latency import HOURS, _create_pg, _p, discard, latencies, on_each_store
from bench.report import Figure
from service.core.quality import SUMS, part

POOL = 1 << 14  # distinct (score, label) rows per model
# use case, task, share of the events, seal in hours, models (name, version, positive rate)
USE_CASES = (
    ("recsys", "binary", 0.6, 70 / 60, (("ranker", "7", 0.25), ("ranker", "8", 0.28))),
    ("eta", "regression", 0.25, 6.0, (("eta-gbm", "2", 0.0),)),
    ("fraud", "binary", 0.15, 90 * 24.0, (("fraud-xgb", "3", 0.02),)),
)
Key = tuple[str, str, int, str, str, str]


def _pool(rng: random.Random, task: str, rate: float) -> list[tuple[Any, int | None, int, float]]:
    """(sums, bin, class, score) of POOL rows: scores that separate the classes, or trip estimates."""
    out = []
    for _ in range(POOL):
        if task == "binary":
            label = int(rng.random() < rate)
            score = rng.betavariate(4, 2) if label else rng.betavariate(2, 4)
        else:
            label = round(rng.lognormvariate(7.3, 0.5))
            score = label * rng.lognormvariate(0, 0.15)
        p = part(task, score, label)
        assert p is not None  # finite by construction
        out.append((p.sums, p.bin, int(p.positive), score))
    return out


def generate(n_events: int, now: datetime, seed: int = 13) -> tuple[dict[Key, list[float]], dict[Any, list[float]]]:
    """The hourly and daily quality rows of n_events labeled predictions."""
    rng = random.Random(seed)
    rand = rng.random
    last_hour = int(now.timestamp() // 3600)
    first_hour = last_hour - HOURS + 1
    choices = []
    for name, task, share, seal_h, models in USE_CASES:
        for model, version, rate in models:
            choices += [(name, model, version, seal_h, _pool(rng, task, rate))] * round(100 * share / len(models))
    sums: dict[Key, list[float]] = {}
    bins: dict[Any, list[float]] = {}
    for _ in range(n_events):
        name, model, version, seal_h, pool = choices[int(rand() * len(choices))]
        hour = first_hour + int(rand() * HOURS)
        status = "final" if hour + 1 + seal_h < now.timestamp() / 3600 else "provisional"
        values, bin_, positive, score = pool[int(rand() * POOL)]
        for bucket, period in (("1h", hour), ("1d", hour // 24)):
            key = (name, bucket, period, model, version, status)
            total = sums.get(key) or sums.setdefault(key, [0.0] * len(SUMS))
            for i, v in enumerate(values):
                total[i] += v
            if bin_ is not None:
                counts = bins.get((*key, bin_)) or bins.setdefault((*key, bin_), [0, 0, 0.0])
                counts[positive] += 1
                counts[2] += score
    return sums, bins


def _rows(table: dict[Any, list[float]]) -> list[tuple[Any, ...]]:
    return [(*k, *v) for k, v in sorted(table.items())]


async def fill(db: Path, pg_dsn: str | None, n_events: int, now: datetime) -> dict[tuple[str, str, str], int]:
    """The rows into the migrated SQLite file (and PostgreSQL database); the final and provisional
    labels generated per (use case, model, version) served in the last 30 days."""
    sums, bins = generate(n_events, now)
    key = ["use_case", "bucket", "period", "model", "model_version", "status"]
    tables = {
        "quality_sums": (key + list(SUMS), [(*r[:6], int(r[6]), *r[7:]) for r in _rows(sums)]),
        "quality_bins": ([*key, "bin", "negatives", "positives", "score_sum"], _rows(bins)),
    }
    lite = sqlite3.connect(db, isolation_level=None)
    pg = await asyncpg.connect(pg_dsn) if pg_dsn else None
    try:
        lite.execute("BEGIN")
        for table, (columns, rows) in tables.items():
            marks = ",".join("?" * len(columns))
            lite.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", rows)
            if pg is not None:
                await pg.copy_records_to_table(table, records=rows, columns=columns)
        lite.execute("COMMIT")
        if pg is not None:
            await pg.execute("VACUUM ANALYZE quality_sums, quality_bins")
    finally:
        lite.close()
        if pg is not None:
            await pg.close()
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for (use_case, bucket, _, model, version, _), total in sums.items():
        if bucket == "1d":
            counts[(use_case, model, version)] += round(total[0])
    print(f"quality: {n_events:,} labeled events, {len(sums):,} sum rows, {len(bins):,} bin rows", flush=True)
    return counts


def check(client: httpx.Client, counts: dict[tuple[str, str, str], int], now: datetime) -> None:
    """Daily figures over 31 days count every generated label of their model version."""
    since = (now - timedelta(days=31)).isoformat()
    for use_case in ("recsys", "eta", "fraud"):
        answer = client.get("/v1/metrics/quality", params={"use_case": use_case, "bucket": "1d", "since": since})
        got = {
            (use_case, m["model"], m["model_version"]): sum(
                b["final"]["count"] + b["provisional"]["count"] for b in m["buckets"]
            )
            for m in answer.raise_for_status().json()["models"]
        }
        want = {k: v for k, v in counts.items() if k[0] == use_case}
        if got != want:
            raise AssertionError(f"{use_case}: the endpoint counts {got}, generated {want}")


def measure(
    url: str, counts: dict[tuple[str, str, str], int], now: datetime, scenario: str, label: str
) -> list[Figure]:
    with httpx.Client(base_url=url, timeout=120) as client:
        check(client, counts, now)
        healthz = latencies(client, "/healthz")
        figures = [
            Figure(scenario, f"GET /healthz {n}", _p(healthz, q), "ms") for q, n in ((0.5, "p50"), (0.99, "p99"))
        ]
        for query, what in (
            ("use_case=recsys&by=model_version&bucket=1d", "recsys, daily, 30 days"),
            ("use_case=recsys&by=model_version&bucket=1h", "recsys, hourly, last 24 hours"),
            ("use_case=eta&by=model_version&bucket=1d", "eta (regression), daily, 30 days"),
        ):
            ms = latencies(client, f"/v1/metrics/quality?{query}")
            for q, name, target in ((0.5, "p50", ""), (0.99, "p99", "< 100 ms")):
                figures.append(
                    Figure(
                        scenario,
                        f"GET /v1/metrics/quality, {what}, {name} ({label}, {len(ms)} requests)",
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
    db = workdir / "quality.db"
    db.unlink(missing_ok=True)
    migrate_sqlite(db)
    pg = asyncio.run(_create_pg()) if postgres else None
    try:
        started = time.perf_counter()
        counts = asyncio.run(fill(db, pg[1] if pg else None, n_events, now))
        print(f"quality: filled in {time.perf_counter() - started:.1f} s", flush=True)
        label = f"{n_events:,} labeled events"
        return on_each_store(workdir, db, pg, "model quality", lambda url, name: measure(url, counts, now, name, label))
    finally:
        discard(db, pg)


if __name__ == "__main__":  # one scenario alone: python -m bench.quality_latency [N]
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="labelloop-bench-") as tmp:
        for figure in scenario(Path(tmp), int(sys.argv[1]) if len(sys.argv) > 1 else 500_000):
            print(f"{figure.scenario} | {figure.figure} | {figure.value:,.1f} {figure.unit}")
