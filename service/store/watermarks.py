"""The stored half of the watermark: per source, the highest event time seen and the last arrival;
in Kafka mode also whether the partition's consumer had read to its end, and when it said so."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Result, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.windows import PartitionProgress, WatermarkState
from service.store.bulk import upsert_rows
from service.store.tables import watermarks

NOTHING_REPORTED = PartitionProgress(state=WatermarkState(), caught_up=False, reported_at=None)


async def load(conn: AsyncConnection, names: Sequence[str]) -> dict[str, PartitionProgress]:
    return _progress(await conn.execute(select(watermarks).where(watermarks.c.name.in_(names))))


async def load_all(conn: AsyncConnection) -> dict[str, PartitionProgress]:
    return _progress(await conn.execute(select(watermarks)))


def _progress(result: Result[Any]) -> dict[str, PartitionProgress]:
    return {
        row.name: PartitionProgress(
            state=WatermarkState(row.max_event_time, row.last_arrival_at),
            caught_up=row.caught_up,
            reported_at=row.reported_at,
        )
        for row in result
    }


async def save(conn: AsyncConnection, progress: dict[str, PartitionProgress]) -> None:
    """Every unit of work saves the watermark: a plain driver statement, no Core processing."""
    await upsert_rows(
        conn,
        watermarks,
        "name",
        [  # in name order, so that writers touching several rows never wait on each other in a cycle
            {
                "name": name,
                "max_event_time": p.state.max_event_time,
                "last_arrival_at": p.state.last_arrival_at,
                "caught_up": p.caught_up,
                "reported_at": p.reported_at,
            }
            for name, p in sorted(progress.items())
        ],
    )
