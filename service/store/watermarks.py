"""The stored half of the watermark: highest event time seen and the last arrival."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.windows import WatermarkState
from service.store.database import dialect_insert
from service.store.tables import watermarks


async def load(conn: AsyncConnection, name: str) -> WatermarkState:
    row = (
        await conn.execute(
            select(watermarks.c.max_event_time, watermarks.c.last_arrival_at).where(watermarks.c.name == name)
        )
    ).one_or_none()
    return WatermarkState() if row is None else WatermarkState(row.max_event_time, row.last_arrival_at)


async def save(conn: AsyncConnection, name: str, state: WatermarkState) -> None:
    stmt = dialect_insert(conn, watermarks).values(
        name=name, max_event_time=state.max_event_time, last_arrival_at=state.last_arrival_at
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "max_event_time": stmt.excluded.max_event_time,
                "last_arrival_at": stmt.excluded.last_arrival_at,
            },
        )
    )
