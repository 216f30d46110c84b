"""Engines are built here, by the process that owns them, never at import."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import ColumnElement, String, Table, any_, bindparam, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service.store.sqlite_inline import InlineConnection


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_loads(value: Any) -> Any:
    # SQLite gives a JSON column numeric affinity: a stored number comes back as a number.
    return orjson.loads(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True)
class Timeouts:
    """Seconds. A store that is unreachable or stalled fails a request within these, never hangs it."""

    connect: float = 5.0
    statement: float = 30.0
    pool: float = 10.0  # waiting for a free connection


def create_engine(url: str, application_name: str, timeouts: Timeouts = Timeouts()) -> AsyncEngine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url, timeouts)
    return create_async_engine(
        url,
        **_common(timeouts),
        pool_pre_ping=True,
        connect_args={
            "timeout": timeouts.connect,
            "command_timeout": timeouts.statement,  # client side: also when the server stalls
            "server_settings": {
                "application_name": application_name,
                "statement_timeout": str(int(timeouts.statement * 1000)),
                # Plan each statement for its parameters. A generic plan cached while a table was
                # empty (a fresh database, before autoanalyze) seq-scans it for good: measured, a
                # joiner fell 97 s behind at 2,000 events/s.
                "plan_cache_mode": "force_custom_plan",
            },
        },
    )


def create_writer_engine(url: str, timeouts: Timeouts = Timeouts()) -> AsyncEngine | None:
    """SQLite files: an engine for the process's write transactions whose statements run on the
    event loop's thread (service/store/sqlite_inline.py). None: write with the main engine."""
    database = make_url(url).database
    if not url.startswith("sqlite") or not database or database == ":memory:" or "?" in url:
        return None
    return _sqlite_engine(url, timeouts, async_creator=lambda: InlineConnection.connect(database))


def _common(timeouts: Timeouts) -> dict[str, Any]:
    # hide_parameters: an error's message never carries the values (subject ids, features) into a log.
    return {
        "json_serializer": _json_dumps,
        "json_deserializer": _json_loads,
        "hide_parameters": True,
        "pool_timeout": timeouts.pool,
    }


def _sqlite_engine(url: str, timeouts: Timeouts, **options: Any) -> AsyncEngine:
    engine = create_async_engine(url, **_common(timeouts), **options)

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA synchronous=FULL")  # a 2xx means the commit reached the disk
        cursor.execute(f"PRAGMA busy_timeout={int(timeouts.statement * 1000)}")
        cursor.close()

    return engine


class Database:
    """One engine plus the rule for writers: in one process, write transactions run one at a time.
    SQLite allows a single writer anyway; on PostgreSQL it keeps this process's transactions from
    queueing on each other's row locks (watermark, dataset seq). writer: the engine for those
    transactions when it is not the main one (create_writer_engine)."""

    def __init__(self, engine: AsyncEngine, writer: AsyncEngine | None = None) -> None:
        self.engine = engine
        self.writer = writer or engine
        self._write_lock = asyncio.Lock()

    @classmethod
    def open(cls, url: str, application_name: str, timeouts: Timeouts = Timeouts()) -> Database:
        return cls(create_engine(url, application_name, timeouts), create_writer_engine(url, timeouts))

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, self.writer.begin() as conn:
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
        if self.writer is not self.engine:
            await self.writer.dispose()
        await self.engine.dispose()

    def disk_fault(self) -> str | None:
        """SQLite: why the database's filesystem cannot take writes (read-only, or full), else None.
        A commit on a full disk can still fit where a failed one left room, so a small write
        succeeding does not mean that records fit (measured on a full tmpfs)."""
        database = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return None
        try:
            fs = os.statvfs(os.path.dirname(os.path.abspath(database)))
        except OSError as exc:
            return f"the database's filesystem cannot be examined: {type(exc).__name__}"
        if fs.f_flag & os.ST_RDONLY:
            return "the database's filesystem is read-only"
        free = fs.f_bavail * fs.f_frsize
        if free < SQLITE_MIN_FREE_BYTES:
            return f"the database's filesystem is full ({free} bytes free)"
        return None


# Below this much free space beside a SQLite database, a write may not fit: not ready.
SQLITE_MIN_FREE_BYTES = 1 << 20


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


# Faults of the store that a later retry can outlive: the connection (08), resources such as a full
# disk (53), operator intervention and cancelled statements (57), system errors (58), a read-only
# server (25006), serialization failures and deadlocks (40001, 40P01), lock timeouts (55P03).
_PG_FAULTS = ("08", "53", "57", "58", "25006", "40001", "40P01", "55P03")
_SQLITE_FAULTS = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN")


def store_fault(exc: BaseException) -> str | None:
    """Why the store cannot serve now, when the fault is the store's; None for anything else (a bug)."""
    if isinstance(exc, sa_exc.TimeoutError):
        return "no free database connection in time"
    if isinstance(exc, sa_exc.DBAPIError):
        orig = exc.orig
        state = getattr(orig, "sqlstate", None) or ""
        name = getattr(orig, "sqlite_errorname", None) or ""
        if state.startswith(_PG_FAULTS):
            return f"PostgreSQL {type(orig).__name__} (SQLSTATE {state})"
        if name.startswith(_SQLITE_FAULTS):
            return f"SQLite {name}: {orig}"
        if exc.connection_invalidated or isinstance(exc, sa_exc.InterfaceError):
            return f"the database connection failed: {type(orig).__name__}"
        if isinstance(orig, OSError | TimeoutError):
            return f"the database could not be reached: {type(orig).__name__}"
        return None
    if isinstance(exc, OSError | TimeoutError):  # raised by the driver before SQLAlchemy wraps anything
        return f"the database could not be reached: {type(exc).__name__}"
    return None


def failure_reason(exc: BaseException) -> str:
    """For a log line: the store's fault, or the exception's type (never its message, which may
    quote what a record holds)."""
    return store_fault(exc) or type(exc).__name__
