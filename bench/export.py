"""Dataset export (embedded mode, SQLite): GET /v1/datasets/recsys as JSONL and as CSV over a store
filled directly with N labeled predictions; rows/s beside a raw sqlite3 read of the same columns
with orjson encoding of each row (the ceiling of reading + encoding, measured in the same run), and
the server's peak RSS, sampled during each export, at two sizes: it must not grow with the row count.

The HTTP client runs as its own process (`python -m bench.export URL PATH N`) and keeps no body."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.ingest import server_process
from bench.report import Figure
from service.store.dataset import DATASET_COLUMNS, JSON_COLUMNS

SCENARIO = "dataset export (embedded, SQLite)"
USE_CASE = "recsys"
BASE_EPOCH = 1790812800  # 2026-10-01 00:00:00 UTC, bench.data.BASE: old timestamps, a backfill
FILL_CHUNK = 50_000
SAMPLE_S = 0.05

_INSERT = (
    "INSERT INTO predictions (prediction_id, use_case, model, model_version, served_at, subject_id, features,"
    " output, context, content_hash, received_at, window_end, seal_at, phase, deadline, label, label_kind,"
    " label_rule, label_sources, label_status, revision, seq, feedback_delay_s)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
# The columns dataset.DATASET_COLUMNS exports, in its order.
_RAW_SELECT = (
    "SELECT prediction_id, model, model_version, served_at, subject_id, features, output, label, label_kind,"
    " label_status, label_sources, feedback_delay_s, revision, seq,"
    " CASE WHEN label_status = 'final' THEN 0.0 END FROM predictions"
    " WHERE use_case = ? ORDER BY seq"
)


# -- the store ------------------------------------------------------------------------------


def migrate(db: Path) -> None:
    """A fresh SQLite file at the schema head, by `labelloop migrate` as an operator would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    env["LABELLOOP_DATABASE_URL"] = f"sqlite+aiosqlite:///{db}"
    subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"], env=env, check=True, capture_output=True, text=True
    )


def _stamp(prefixes: dict[int, str], second: int, micro: str) -> str:
    """SQLAlchemy's SQLite DATETIME text (naive UTC, fixed width)."""
    prefix = prefixes.get(second)
    if prefix is None:
        prefix = prefixes[second] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
    return prefix + micro


def _rows(start: int, stop: int, prefixes: dict[int, str]) -> Iterator[tuple[Any, ...]]:
    """Final recsys labels as the labeler stores them: one prediction a millisecond from BASE,
    60% behavioral positives, 15% explicit ratings, 25% implicit negatives; seq = i + 1."""
    segments = "abcd"
    for i in range(start, stop):
        second, micro = BASE_EPOCH + i // 1000, f".{(i % 1000) * 1000:06d}"
        served = _stamp(prefixes, second, micro)
        kind = i % 20
        eid, actor = f"e{i:09d}", f"user:{i % 997}"
        if kind < 12:
            etype = "click" if kind < 8 else "purchase"
            label, label_kind, rank = 1, "behavioral", 0 if kind < 8 else 2
            rule = f"events.{etype}: positive, rank {rank}"
            sources = f'[{{"event_id":"{eid}","type":"{etype}","actor":"{actor}"}}]'
            delay: float | None = 1.0 + (i * 7919 % 3600) / 10
        elif kind < 15:
            stars = 1 + i % 5
            label, label_kind, rule = int(stars >= 4), "explicit", "events.rating: explicit, latest"
            sources = f'[{{"event_id":"{eid}","type":"rating","actor":"{actor}"}}]'
            delay = 30.0 + (i * 104729 % 7200) / 10
        else:
            label, label_kind, sources, delay = 0, "implicit_negative", "[]", None
            rule = "window 0:10:00 closed with no positive: implicit negative"
        yield (
            f"p{i:09d}",
            USE_CASE,
            "ranker",
            "7",
            served,
            actor,
            f'{{"position":{i % 10},"user_segment":"{segments[i * 31 % 4]}"}}',
            f'{{"score":{(i * 2654435761 % 10000) / 10000}}}',
            None,
            f"{i:064x}",
            _stamp(prefixes, second + 1, micro),
            _stamp(prefixes, second + 600, micro),
            _stamp(prefixes, second + 4200, micro),
            "final",
            None,  # final: no deadline, so the window sweep never visits these rows
            label,
            label_kind,
            rule,
            sources,
            "final",
            1,
            i + 1,
            delay,
        )


def fill(db: Path, n: int) -> float:
    """Migrate a fresh database and insert n labeled recsys rows; returns the seconds it took."""
    started = time.perf_counter()
    migrate(db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")  # a bulk load: no rollback journal, no fsync
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        prefixes: dict[int, str] = {}
        conn.execute("BEGIN")
        for start in range(0, n, FILL_CHUNK):
            conn.executemany(_INSERT, _rows(start, min(n, start + FILL_CHUNK), prefixes))
            if len(prefixes) > 100_000:
                prefixes.clear()
        conn.execute("INSERT INTO dataset_seqs (use_case, last_seq) VALUES (?, ?)", (USE_CASE, n))
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")  # what the service sets on every connection
    finally:
        conn.close()
    return time.perf_counter() - started


def raw_read(db: Path, n: int) -> float:
    """Rows/s of sqlite3 reading the exported columns in seq order and encoding each row with
    orjson, JSON columns passed through as stored: the ceiling of reading + encoding."""
    conn = sqlite3.connect(db)
    try:
        fragment = orjson.Fragment
        json_at = [name in JSON_COLUMNS for name in DATASET_COLUMNS]
        started = time.perf_counter()
        count, size = 0, 0
        for row in conn.execute(_RAW_SELECT, (USE_CASE,)):
            record = {
                name: fragment(v) if is_json and isinstance(v, str) else v
                for name, v, is_json in zip(DATASET_COLUMNS, row, json_at, strict=True)
            }
            size += len(orjson.dumps(record)) + 1
            count += 1
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    assert count == n, f"raw read: {count} rows, expected {n}"
    return n / elapsed


# -- the server and its memory --------------------------------------------------------------


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def export(url: str, pid: int, fmt: str, n: int) -> dict[str, float]:
    """Stream the whole dataset in a client process while sampling the server's RSS."""
    client = subprocess.Popen(
        [sys.executable, "-m", "bench.export", url, f"/v1/datasets/{USE_CASE}?format={fmt}", str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak = rss_mb(pid)
    while client.poll() is None:
        peak = max(peak, rss_mb(pid))
        time.sleep(SAMPLE_S)
    out, _ = client.communicate()
    if client.returncode != 0:
        raise RuntimeError(f"export client failed ({fmt}, {n} rows)")
    result: dict[str, float] = json.loads(out)
    result["peak_rss_mb"] = max(peak, rss_mb(pid))
    return result


def _fetch(url: str, path: str, n: int) -> dict[str, float]:
    """The client: count rows in the streamed body, keeping only its tail; check count and last seq."""
    csv = "format=csv" in path
    newlines, size, tail = 0, 0, b""
    started = time.perf_counter()
    with (
        httpx.Client(base_url=url, timeout=httpx.Timeout(60.0)) as client,
        client.stream("GET", path) as response,
    ):
        response.raise_for_status()
        first_byte = time.perf_counter() - started
        for chunk in response.iter_raw(1 << 20):
            newlines += chunk.count(b"\n")
            size += len(chunk)
            tail = (tail + chunk)[-65536:]
    elapsed = time.perf_counter() - started
    rows = newlines - 1 if csv else newlines  # CSV: a header line first
    last = tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
    last_seq = int(last.rsplit(b",", 2)[-2]) if csv else orjson.loads(last)["seq"]  # CSV: seq, then p_flip
    if rows != n or last_seq != n:
        raise SystemExit(f"{path}: exported {rows} rows ending at seq {last_seq}, expected {n}")
    return {"rows": rows, "bytes": size, "seconds": elapsed, "first_byte_s": first_byte, "rows_per_s": rows / elapsed}


# -- the scenario ---------------------------------------------------------------------------


def scenario(workdir: Path, sizes: list[int]) -> list[Figure]:
    figures: list[Figure] = []
    peaks: dict[tuple[str, int], float] = {}
    for n in sizes:
        db = workdir / f"export-{n}.db"
        seconds = fill(db, n)
        print(f"export: filled {n:,} rows in {seconds:.1f} s", flush=True)
        raw = raw_read(db, n)
        with server_process(workdir, db=db) as (url, process):
            pid = process.pid
            idle = rss_mb(pid)
            results = {fmt: export(url, pid, fmt, n) for fmt in ("jsonl", "csv")}
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            path.unlink(missing_ok=True)
        figures.append(Figure(SCENARIO, f"raw sqlite3 read + orjson per row ({n:,} rows)", raw, "rows/s"))
        for fmt, target in (("jsonl", ">= 300,000 rows/s"), ("csv", "")):
            r = results[fmt]
            peaks[(fmt, n)] = r["peak_rss_mb"]
            figures += [
                Figure(
                    SCENARIO,
                    f"{fmt.upper()} export ({n:,} rows, {r['bytes'] / 1e6:,.0f} MB)",
                    r["rows_per_s"],
                    "rows/s",
                    "raw sqlite3 read + orjson",
                    raw,
                    target,
                ),
                Figure(
                    SCENARIO,
                    f"server peak RSS during the {fmt.upper()} export ({n:,} rows)",
                    r["peak_rss_mb"],
                    "MB",
                    "RSS idle before the exports",
                    idle,
                    "< 250 MB" if fmt == "jsonl" else "",
                ),
            ]
    small, large = min(sizes), max(sizes)
    if large != small:
        for fmt in ("jsonl", "csv"):
            figures.append(
                Figure(
                    SCENARIO,
                    f"{fmt.upper()} peak RSS growth, {large:,} vs {small:,} rows",
                    peaks[(fmt, large)],
                    "MB",
                    f"peak RSS at {small:,} rows",
                    peaks[(fmt, small)],
                    "ratio ~1.0 (flat)",
                )
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="export client: stream a dataset, count its rows")
    parser.add_argument("url")
    parser.add_argument("path")
    parser.add_argument("n", type=int, help="expected rows")
    args = parser.parse_args()
    sys.stdout.write(json.dumps(_fetch(args.url, args.path, args.n)) + "\n")


if __name__ == "__main__":
    main()
