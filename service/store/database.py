"""Engines are built here, by the process that owns them, never at import."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import ColumnElement, String, Table, any_, bindparam, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_loads(value: Any) -> Any:
    # SQLite gives a JSON column numeric affinity: a stored number comes back as a number.
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def create_engine(url: str, application_name: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, json_serializer=_json_dumps, json_deserializer=_json_loads)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cursor.execute("PRAGMA synchronous=FULL")  # a 2xx means the commit reached the disk
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=_json_loads,
        pool_pre_ping=True,
        connect_args={
            "server_settings": {
                "application_name": application_name,
                # Plan each statement for its parameters. A generic plan cached while a table was
                # empty (a fresh database, before autoanalyze) seq-scans it for good: measured, a
                # joiner fell 97 s behind at 2,000 events/s.
                "plan_cache_mode": "force_custom_plan",
            }
        },
    )


class Database:
    """One engine plus the rule for writers: in one process, write transactions run one at a time.
    SQLite allows a single writer anyway; on PostgreSQL it keeps this process's transactions from
    queueing on each other's row locks (watermark, dataset seq)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._write_lock = asyncio.Lock()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @property
    def writing(self) -> asyncio.Lock:
        """Held by this process's write transaction, and by what must follow its commit before
        the next transaction starts (publishing the writer's state)."""
        return self._write_lock

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


def one_of(conn: AsyncConnection, column: ColumnElement[str], values: Sequence[str]) -> ColumnElement[bool]:
    """column IN values. On PostgreSQL as `= ANY(array)`: one parameter whatever the count (an IN
    list of 500 parameters costs more to plan than to run)."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(String())))
    return column.in_(values)


def dialect_insert(conn: AsyncConnection, table: Table) -> Any:
    """INSERT with the dialect's ON CONFLICT support (SQLite and PostgreSQL spell it alike)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
