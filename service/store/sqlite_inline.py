"""A SQLite connection for the embedded writer that runs its statements on the event loop's own
thread, handing only the steps that can wait (taking the write lock, the commit's fsync) to a
worker thread.

aiosqlite runs every call in its connection's thread: a statement, its fetch and its cursor each
cost a round trip (queue put, thread wake-up, a call_soon_threadsafe back), 31 of them for one
group commit of single predictions, where SQLite itself spends microseconds per statement.
Measured in-process, one record per group: 2.95 ms of main-thread CPU per group through aiosqlite,
1.72 ms here; groups of 25 commit 20-25% faster (bench/findings.md). Here a unit of work costs two
round trips: BEGIN IMMEDIATE (it may wait on another process's write
lock, up to busy_timeout) and COMMIT. Between them this connection holds SQLite's write lock, so
in WAL mode no statement can wait on anyone.

It speaks the subset of aiosqlite's interface that SQLAlchemy's aiosqlite dialect uses, so the
dialect, its type handling and its error translation stay as they are (`async_creator`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

# The statements before which Python's sqlite3 module (legacy transaction control) opens a
# transaction: the same ones open ours, so reads outside a write stay as they were.
_DML = ("INSERT", "UPDATE", "DELETE", "REPLAC")


class InlineCursor:
    def __init__(self, owner: InlineConnection) -> None:
        self._owner = owner
        self._cursor = owner.sqlite.cursor()

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> InlineCursor:
        await self._owner.begin_if_writing(sql)
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        await self._owner.begin_if_writing(sql)
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    def __init__(self, connection: sqlite3.Connection) -> None:
        # The dialect checks `_connection` for an open connection, as aiosqlite names it.
        self._connection: sqlite3.Connection | None = connection
        self.sqlite = connection  # autocommit at the driver (isolation_level=None): we say BEGIN

    @property
    def isolation_level(self) -> str | None:
        return self.sqlite.isolation_level

    @classmethod
    async def connect(cls, database: str) -> InlineConnection:
        connection = await asyncio.to_thread(sqlite3.connect, database, isolation_level=None, check_same_thread=False)
        return cls(connection)

    async def begin_if_writing(self, sql: str) -> None:
        if not self.sqlite.in_transaction and sql.lstrip()[:6].upper() in _DML:
            await self._off_loop("BEGIN IMMEDIATE")

    async def _off_loop(self, sql: str) -> None:
        """On a worker thread. Cancelled meanwhile, it still waits for that thread: the connection
        must not be rolled back, closed or pooled while a statement runs on it."""
        step = asyncio.ensure_future(asyncio.to_thread(self.sqlite.execute, sql))
        cancelled = None
        while not step.done():
            try:
                await asyncio.shield(step)
            except asyncio.CancelledError as exc:  # again and again: the thread still runs
                cancelled = exc
        if cancelled is not None:
            raise cancelled
        step.result()

    def cursor(self) -> InlineCursor:
        return InlineCursor(self)

    async def run(self, sql: str, parameters: Sequence[Any] | list[Sequence[Any]]) -> list[Any]:
        """A statement straight on the sqlite3 connection, once per tuple of a list; its rows.
        Measured: 9 us a statement, against 43 us as SQLAlchemy driver SQL (store/bulk.py)."""
        await self.begin_if_writing(sql)
        if isinstance(parameters, list):
            return self.sqlite.executemany(sql, parameters).fetchall()
        return self.sqlite.execute(sql, parameters).fetchall()

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        if self.sqlite.in_transaction:
            await self._off_loop("COMMIT")

    async def rollback(self) -> None:
        if self.sqlite.in_transaction:
            self.sqlite.execute("ROLLBACK")

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:  # also SQLAlchemy's forced terminate
        self._connection = None
        self.sqlite.close()

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self.sqlite.create_function(*args, **kw)
