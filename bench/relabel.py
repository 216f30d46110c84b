"""Relabel throughput: `labelloop relabel`'s code (service/store/relabel.py) over N stored recsys
predictions, every other one with an event (bench.data; the others implicit negatives), ingested
in-process under the bundled policy and relabeled under a longer window and lateness (30 min, 3 h):
every implicit negative's rule changes, the events between the two seals now count. Predictions
read per second beside the in-process ingest of the same records in the same run; the positives
are checked against what the new policy must give. On SQLite, and on a scratch PostgreSQL database
when `postgres` is set."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from bench.data import BASE, workload
from bench.metrics_latency import _create_pg, _drop_pg
from bench.report import Figure
from service.clock import utcnow
from service.core.model import EventRecord, PredictionRecord
from service.core.policy import BUNDLED_POLICIES, PolicySet, load_policies
from service.store import migrate
from service.store.database import Database, create_engine
from service.store.ingest import LabelContext, Submission, ingest
from service.store.relabel import relabel
from service.store.tables import predictions

CHUNK = 5_000  # predictions per ingest unit, with their events
DISORDER = IDLE = timedelta(seconds=5)


def _policies() -> tuple[PolicySet, PolicySet]:
    a = load_policies(BUNDLED_POLICIES)
    raw = a.model_dump(mode="json")
    raw["use_cases"]["recsys"].update(window="30m", allowed_lateness="3h")
    return a, PolicySet.model_validate(raw)


def _ctx(policies: PolicySet) -> LabelContext:
    return LabelContext(policies, DISORDER, IDLE, orphan_ttl=timedelta(hours=24))


async def _run(url: str, n: int, backend: str) -> list[Figure]:
    a, b = _policies()
    db = Database(create_engine(url, "labelloop-bench"))
    try:
        await migrate.upgrade(db.engine)
        preds, evs = records(n)
        started = time.perf_counter()
        for start in range(0, n, CHUNK):
            chunk = preds[start : start + CHUNK]
            ids = {p.prediction_id for p in chunk}
            unit = Submission(chunk, [e for e in evs if e.prediction_id in ids])
            async with db.write() as conn:
                await ingest(conn, _ctx(a), utcnow(), [unit])
        more = True
        while more:  # the stream goes quiet: the wall clock seals everything (old timestamps)
            async with db.write() as conn:
                more = (await ingest(conn, _ctx(a), utcnow() + timedelta(days=1))).more_due
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()
        report = await relabel(db, _ctx(b), "recsys", kafka_topics=None, batch=1000)
        relabel_s = time.perf_counter() - started
        async with db.read() as conn:
            labels = await conn.execute(select(predictions.c.label).where(predictions.c.label_kind.is_not(None)))
            positives = sum(1 for (label,) in labels if label == 1)
    finally:
        await db.dispose()
    if report.scanned != n or positives != workload_positives(n):
        raise AssertionError(f"{backend}: relabeled {report.scanned} of {n}, {positives} positives")
    print(f"relabel {backend}: {report.as_json()['labels']} in {relabel_s:.1f} s", flush=True)
    scenario = f"relabel ({backend})"
    return [
        Figure(
            scenario,
            f"relabel under a longer window, predictions/s ({n:,}, {report.revised:,} revised)",
            n / relabel_s,
            "rows/s",
            "in-process ingest of the same records, predictions/s",
            n / ingest_s,
        )
    ]


def records(n: int) -> tuple[list[PredictionRecord], list[EventRecord]]:
    data = workload(n)
    return data.predictions, data.events[::2]


def workload_positives(n: int) -> int:
    """The positives the new policy gives: events counted up to its seal (served + 3 h 30 min)."""
    seal = timedelta(minutes=30) + timedelta(hours=3)
    preds, evs = records(n)
    served = {p.prediction_id: p.served_at or BASE for p in preds}
    return sum(
        1
        for e in evs
        if e.occurred_at is not None
        and e.occurred_at - served[e.prediction_id] <= seal
        and (e.type != "rating" or int(e.value or 0) >= 4)
    )


def scenario(workdir: Path, n: int, postgres: bool = True) -> list[Figure]:
    db = workdir / "relabel.db"
    db.unlink(missing_ok=True)
    figures = asyncio.run(_run(f"sqlite+aiosqlite:///{db}", n, "embedded, SQLite"))
    if postgres:
        name, dsn = asyncio.run(_create_pg())
        try:
            figures += asyncio.run(_run(dsn.replace("postgresql://", "postgresql+asyncpg://"), n, "PostgreSQL"))
        finally:
            asyncio.run(_drop_pg(name))
    return figures
