"""Joiner throughput: records preloaded in Kafka until every one is committed in PostgreSQL, for 1
and 2 consumer processes, beside the two ceilings measured in the same run (raw consumption of
the same topics, PostgreSQL COPY of the same rows) and a naive joiner on a sample."""

from __future__ import annotations

import ast
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.data import Workload
from bench.export import rss_mb
from bench.kafka_env import ALL_TABLES, BenchEnv, preload, start_consumer, topics_consumer
from bench.report import Figure
from service.config import Settings
from service.kafka.topics import ensure_topics


async def raw_consumption(settings: Settings, total: int) -> float:
    """Records/s of an aiokafka consumer that does nothing with what it reads."""
    consumer = topics_consumer(settings, "raw")
    await consumer.start()
    try:
        seen, started = 0, None
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if batch and started is None:
                started = time.perf_counter()
            seen += sum(len(m) for m in batch.values())
        assert started is not None
        return total / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def _copy_rows(work: Workload) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The records' own columns, in the order of COPY_COLUMNS."""
    p_rows = [
        (
            p.prediction_id,
            p.use_case,
            p.model,
            p.model_version,
            p.served_at,
            orjson.dumps(p.features).decode(),
            orjson.dumps(p.output).decode(),
        )
        for p in work.predictions
    ]
    e_rows = [
        (e.event_id, e.prediction_id, e.type, e.occurred_at, orjson.dumps(e.value).decode(), e.actor)
        for e in work.events
    ]
    return p_rows, e_rows


COPY_COLUMNS = (
    ["prediction_id", "use_case", "model", "model_version", "served_at", "features", "output"],
    ["event_id", "prediction_id", "type", "occurred_at", "value", "actor"],
)


async def copy_ceiling(dsn: str, work: Workload) -> float:
    """Rows/s of PostgreSQL COPY of the same rows into unindexed scratch tables."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TEMP TABLE p (prediction_id text, use_case text, model text, model_version text,"
            " served_at timestamptz, features jsonb, output jsonb);"
            "CREATE TEMP TABLE e (event_id text, prediction_id text, type text, occurred_at timestamptz,"
            " value jsonb, actor text)"
        )
        p_rows, e_rows = _copy_rows(work)
        started = time.perf_counter()
        await conn.copy_records_to_table("p", records=p_rows)
        await conn.copy_records_to_table("e", records=e_rows)
        return (len(p_rows) + len(e_rows)) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def store_copy(dsn: str, work: Workload) -> float:
    """Rows/s of COPY of the same records into the store's own tables (indexed, logged, each row
    written once, no label): what the schema alone costs on this machine."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {ALL_TABLES}")  # the ingest scenarios ran on this database first
        digest = "0" * 64
        own_p, own_e = _copy_rows(work)
        # The columns the store requires beyond the records' own: digest, times, phase, disposition.
        p_rows = [
            (*row, digest, p.served_at, p.served_at, p.served_at, "open", p.served_at)
            for row, p in zip(own_p, work.predictions, strict=True)
        ]
        e_rows = [(*row, digest, e.occurred_at, "counted") for row, e in zip(own_e, work.events, strict=True)]
        p_columns = [*COPY_COLUMNS[0], "content_hash", "received_at", "window_end", "seal_at", "phase", "deadline"]
        e_columns = [*COPY_COLUMNS[1], "content_hash", "received_at", "disposition"]
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table("predictions", records=p_rows, columns=p_columns)
            await conn.copy_records_to_table("events", records=e_rows, columns=e_columns)
        rate = (len(p_rows) + len(e_rows)) / (time.perf_counter() - started)
        await conn.execute("TRUNCATE predictions, events")
        return rate
    finally:
        await conn.close()


async def naive_joiner(dsn: str, work: Workload, sample: int) -> float:
    """One record at a time: look up the prediction, write the event and the label, commit. Into
    logged tables, as a real joiner's: every commit waits for its WAL flush (a temporary table's
    commits do not: an earlier version of this reference on temporary tables ran 1.6x faster)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE np (prediction_id text primary key, served_at timestamptz, label int);"
            "CREATE TABLE ne (event_id text primary key, prediction_id text, type text, occurred_at timestamptz)"
        )
        half = sample // 2
        started = time.perf_counter()
        for p in work.predictions[:half]:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO np VALUES ($1, $2, NULL) ON CONFLICT DO NOTHING", p.prediction_id, p.served_at
                )
        for e in work.events[:half]:
            async with conn.transaction():
                served = await conn.fetchval("SELECT served_at FROM np WHERE prediction_id = $1", e.prediction_id)
                await conn.execute(
                    "INSERT INTO ne VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    e.event_id,
                    e.prediction_id,
                    e.type,
                    e.occurred_at,
                )
                if served is not None:
                    await conn.execute("UPDATE np SET label = 1 WHERE prediction_id = $1", e.prediction_id)
        return 2 * half / (time.perf_counter() - started)
    finally:
        await conn.execute("DROP TABLE IF EXISTS np, ne")
        await conn.close()


async def _progress(conn: asyncpg.Connection) -> tuple[int, int, int]:
    """Records committed, predictions whose label is final (window closed, seal passed), and
    predictions stored."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM predictions) + (SELECT count(*) FROM events),"
        " (SELECT count(*) FROM predictions WHERE label_status = 'final'), (SELECT count(*) FROM predictions)"
    )
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


@dataclass(frozen=True)
class JoinerRun:
    rate: float  # records/s
    positives: int  # positive labels at the end
    peak_rss_mb: float  # the largest peak RSS of the joiner processes
    most_open: int  # the most predictions seen stored and not final at once


def _assigned(log: Path) -> set[str]:
    """The partitions a joiner last logged (as JSON lines) as assigned to it."""
    found: set[str] = set()
    for text in log.read_text(errors="replace").splitlines():
        try:
            line = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue  # a line cut off, or not ours
        if line.get("logger") == "consumers.joiner" and line.get("msg", "").startswith("assigned "):
            found = set(ast.literal_eval(line["msg"].removeprefix("assigned ")))
    return found


async def run_joiners(env: BenchEnv, work: Workload, processes: int, logs: Path) -> JoinerRun:
    """Joiners on fresh topics: once their group has formed, the workload is produced (far faster
    than they consume); records/s from the first committed row until every label is final (the
    last windows close when the idle watermark passes them, idle_timeout after the last record),
    and the positive labels at the end."""
    settings = env.settings()
    await ensure_topics(settings)
    conn = await asyncpg.connect(env.dsn)
    await conn.execute(f"TRUNCATE {ALL_TABLES}")
    total = len(work.predictions) + len(work.events)
    every = {f"{t}:{p}" for t in (settings.kafka_predictions_topic, settings.kafka_events_topic) for p in range(4)}
    paths = [logs / f"joiner-{processes}-{i}.log" for i in range(processes)]
    consumers = [start_consumer(settings.model_copy(update={"log_level": "info"}), path) for path in paths]
    try:
        deadline = time.monotonic() + 120
        while [len(_assigned(p)) for p in paths].count(0) or set().union(*map(_assigned, paths)) != every:
            if time.monotonic() > deadline or any(c.poll() is not None for c in consumers):
                raise RuntimeError(f"the joiners' group did not form; see {logs}")
            await asyncio.sleep(0.2)
        await preload(settings, work)
        first = None
        most_open = 0
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            done, final, stored = await _progress(conn)
            most_open = max(most_open, stored - final)
            if done and first is None:
                first = (time.perf_counter(), done)
            if done >= total and final == len(work.predictions):
                break
            if any(c.poll() is not None for c in consumers):
                raise RuntimeError(f"a joiner exited; see {logs}")
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"joiners did not finish; see {logs}")
        assert first is not None
        rate = (total - first[1]) / (time.perf_counter() - first[0])
        positives = int(await conn.fetchval("SELECT count(*) FROM predictions WHERE label = '1'::jsonb") or 0)
        peak = max(rss_mb(c.pid, "VmHWM") for c in consumers)
        return JoinerRun(rate, positives, peak, most_open)
    finally:
        for c in consumers:
            c.terminate()
        for c in consumers:
            c.wait(timeout=30)
        await conn.close()


async def scenario(env: BenchEnv, work: Workload, logs: Path) -> list[Figure]:
    total = len(work.predictions) + len(work.events)
    settings = env.settings()
    await preload(settings, work)
    raw = await raw_consumption(settings, total)
    copy = await copy_ceiling(env.dsn, work)
    schema = await store_copy(env.dsn, work)
    naive = await naive_joiner(env.dsn, work, sample=min(4000, total))
    figures = [
        Figure("joiner", "raw aiokafka consumption (ceiling)", raw, "records/s"),
        Figure("joiner", "PostgreSQL COPY of the same rows (ceiling)", copy, "rows/s"),
        Figure("joiner", "PostgreSQL COPY into the store's indexed tables, no labels", schema, "rows/s"),
        Figure("joiner", "naive joiner (one record per transaction)", naive, "records/s"),
    ]
    one_process = None
    for processes in (1, 2):
        run = await run_joiners(env, work, processes, logs)
        if run.positives != work.expected_positive:
            raise AssertionError(f"{run.positives} positive labels, the generator's truth is {work.expected_positive}")
        rate = run.rate
        label = f"{processes} consumer process{'es' if processes > 1 else ''}, {total:,} records"
        figures.append(Figure("joiner", label, rate, "records/s", "raw consumption", raw, ">= 0.1x, >= 25,000/s"))
        figures.append(Figure("joiner", f"{label} vs naive", rate, "records/s", "naive joiner", naive, ">= 10x"))
        figures.append(Figure("joiner", f"{label} vs the schema", rate, "records/s", "COPY into the store", schema, ""))
        figures.append(
            Figure(
                "joiner",
                f"{label}: peak RSS of a joiner process, at most {run.most_open:,} windows open at once",
                run.peak_rss_mb,
                "MB",
                target="bounded (the joiner holds no label state)",
            )
        )
        if one_process is None:
            one_process = rate
        else:
            figures.append(
                Figure(
                    "joiner", f"{label} vs 1 process", rate, "records/s", "1 consumer process", one_process, ">= 1.6x"
                )
            )
    return figures
