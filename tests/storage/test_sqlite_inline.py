"""The embedded writer's SQLite engine (service/store/sqlite_inline.py): statements on the event
loop's thread, only the write lock and the commit handed to a worker thread; durable commits,
clean rollbacks, and a loop that keeps running while another process holds the write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from service.store import bulk
from service.store.database import Database, Timeouts, create_writer_engine


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database.open(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}", "tests", Timeouts(statement=5))
    async with database.engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    yield database
    await database.dispose()


def _rows(db: Database) -> list[tuple[int, str]]:
    """What another connection sees: only what was committed."""
    path = db.engine.url.database
    assert path is not None
    with sqlite3.connect(path) as other:
        return other.execute("SELECT id, v FROM t ORDER BY id").fetchall()


async def test_the_writer_has_its_own_inline_engine(db: Database) -> None:
    assert db.writer is not db.engine
    assert create_writer_engine("sqlite+aiosqlite:///:memory:") is None  # a second engine: another database
    assert create_writer_engine("postgresql+asyncpg://localhost/test") is None


async def test_a_unit_of_work_hands_two_steps_to_a_thread(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    handed: list[str] = []
    to_thread = asyncio.to_thread

    async def counting(function: object, *args: object, **kwargs: object) -> object:
        handed.append(str(args[0]) if args else getattr(function, "__name__", "?"))
        return await to_thread(function, *args, **kwargs)  # type: ignore[arg-type]

    async with db.write() as conn:  # connect first: opening a connection is a thread step too
        await conn.exec_driver_sql("SELECT 1")
    monkeypatch.setattr(asyncio, "to_thread", counting)
    async with db.write() as conn:
        await conn.exec_driver_sql("SELECT count(*) FROM t")  # a read opens no transaction
        for i in range(20):
            await conn.execute(text("INSERT INTO t (id, v) VALUES (:id, :v)"), {"id": i, "v": f"v{i}"})
        assert _rows(db) == []  # not committed yet
    assert handed == ["BEGIN IMMEDIATE", "COMMIT"]
    assert len(_rows(db)) == 20


async def _insert_twice(db: Database) -> None:
    async with db.write() as conn:
        await conn.exec_driver_sql("INSERT INTO t (id, v) VALUES (1, 'a')")
        await conn.exec_driver_sql("INSERT INTO t (id, v) VALUES (1, 'again')")


async def test_a_failed_unit_leaves_nothing(db: Database) -> None:
    with pytest.raises(IntegrityError):
        await _insert_twice(db)
    assert _rows(db) == []
    async with db.write() as conn:  # the connection went back to the pool usable
        await conn.exec_driver_sql("INSERT INTO t (id, v) VALUES (1, 'b')")
    assert _rows(db) == [(1, "b")]


async def test_the_loop_runs_while_another_process_holds_the_write_lock(db: Database) -> None:
    path = db.engine.url.database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t (id, v) VALUES (1, 'theirs')")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    running = asyncio.create_task(ticker())
    release.start()
    try:
        async with db.write() as conn:
            await conn.exec_driver_sql("INSERT INTO t (id, v) VALUES (2, 'ours')")
    finally:
        running.cancel()
        release.join()
        holder.close()
    assert _rows(db) == [(1, "theirs"), (2, "ours")]
    # The writer waited about 0.5 s for the lock; a loop blocked by it would not have ticked.
    assert ticks >= 10, f"the event loop ticked {ticks} times while the writer waited"


async def test_bulk_statements_run_on_the_sqlite_connection_itself(db: Database) -> None:
    """bulk.run() bypasses SQLAlchemy's execution on the inline connection: a list of tuples runs
    once per tuple, rows come back as tuples, the transaction is the unit's, and an error is
    SQLAlchemy's, as through exec_driver_sql, without the record's values in its message."""
    async with db.write() as conn:
        await bulk.run(conn, "INSERT INTO t (id, v) VALUES (?, ?)", [(1, "a"), (2, "secret")])
        assert await bulk.run(conn, "SELECT id, v FROM t WHERE id >= ?", (2,)) == [(2, "secret")]
        assert _rows(db) == []  # inside the unit's transaction
        with pytest.raises(IntegrityError) as raised:
            await bulk.run(conn, "INSERT INTO t (id, v) VALUES (?, ?)", [(2, "secret")])
        assert isinstance(raised.value.orig, sqlite3.IntegrityError)
        assert "secret" not in str(raised.value)
    assert _rows(db) == [(1, "a"), (2, "secret")]


async def test_bulk_statements_of_other_connections_go_through_sqlalchemy(db: Database) -> None:
    async with db.engine.begin() as conn:  # aiosqlite: not the writer's inline connection
        await bulk.run(conn, "INSERT INTO t (id, v) VALUES (?, ?)", [(3, "c")])
        assert await bulk.run(conn, "SELECT v FROM t") == [("c",)]
        with pytest.raises(IntegrityError):
            await bulk.run(conn, "INSERT INTO t (id, v) VALUES (?, ?)", (3, "c"))
