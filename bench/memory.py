"""Memory with many open windows (embedded, SQLite): fraud predictions, whose 90-day window stays
open for the whole run, posted in batches of 1,000; the server's RSS after each quarter. The
writer keeps the label state of at most LABELLOOP_STATE_CAPACITY open predictions; the rest stays
in the store, so RSS must level off once that many are held, however many windows are open."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import orjson

from bench.data import BASE
from bench.export import rss_mb
from bench.ingest import server_process
from bench.report import Figure
from service.config import Settings

SCENARIO = "memory (embedded, SQLite, fraud: 90-day windows)"
BATCH = 1000


def _batch(start: int) -> bytes:
    records = [
        {
            "prediction_id": f"fraud-{i:09d}",
            "use_case": "fraud",
            "served_at": (BASE + timedelta(seconds=i / 100)).isoformat(),
            "features": {"amount": i % 997, "country": "de"},
            "output": {"score": (i % 100) / 100},
        }
        for i in range(start, start + BATCH)
    ]
    return orjson.dumps({"predictions": records})


def scenario(workdir: Path, n: int) -> list[Figure]:
    capacity = Settings().state_capacity
    figures = []
    with server_process(workdir, db=workdir / "memory.db") as (url, process):
        idle = rss_mb(process.pid)
        quarters = {n // 4 * k for k in (1, 2, 3, 4)}
        with httpx.Client(base_url=url, timeout=120) as client:
            for start in range(0, n, BATCH):
                response = client.post(
                    "/v1/predictions", content=_batch(start), headers={"content-type": "application/json"}
                )
                response.raise_for_status()
                if start + BATCH in quarters:
                    figures.append(
                        Figure(
                            SCENARIO,
                            f"server RSS with {start + BATCH:,} windows open (state capacity {capacity:,})",
                            rss_mb(process.pid),
                            "MB",
                            "RSS idle before the load",
                            idle,
                            "levels off past the capacity",
                        )
                    )
        figures.append(Figure(SCENARIO, f"server peak RSS, {n:,} windows open", rss_mb(process.pid, "VmHWM"), "MB"))
    return figures
