"""Who may write a store. The embedded API process keeps its open predictions in memory
(service/store/state.py), which is right only while nobody else writes them: it holds an
exclusive lease for its lifetime. Kafka joiners, which coordinate through row locks, share a
lease with one another, so that neither kind starts beside the other.

PostgreSQL: a session advisory lock, held on a connection of its own and released by the server
when that session ends, however the process ends. SQLite: flock on a file beside the database,
released by the kernel.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

# pg_advisory_lock key: the first 8 bytes of sha256(b"labelloop store writers"), as a signed bigint.
_PG_KEY = -0x1BDEA9E89344EF43


class WriterConflict(Exception):
    """Another process holds a lease that excludes this one."""


_EXPLAIN = (
    "labelloop's embedded mode runs one API process per database (it keeps the label state of open "
    "predictions in memory); to scale out, use Kafka mode, whose joiners share the store"
)


@asynccontextmanager
async def writer_lease(engine: AsyncEngine, exclusive: bool) -> AsyncIterator[None]:
    if engine.dialect.name == "postgresql":
        async with _pg_lease(engine, exclusive):
            yield
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield  # a private in-memory database: nobody else can write it
        return
    with _file_lease(Path(f"{database}.writers"), exclusive):
        yield


@asynccontextmanager
async def _pg_lease(engine: AsyncEngine, exclusive: bool) -> AsyncIterator[None]:
    function = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
    async with engine.connect() as conn:
        taken = (await conn.exec_driver_sql(f"SELECT {function}({_PG_KEY})")).scalar_one()
        await conn.commit()
        if not taken:
            raise WriterConflict(f"{_held_by(exclusive)}: {_EXPLAIN}")
        try:
            yield
        finally:
            release = "pg_advisory_unlock" if exclusive else "pg_advisory_unlock_shared"
            with contextlib.suppress(Exception):  # a lost session has released it already
                await conn.exec_driver_sql(f"SELECT {release}({_PG_KEY})")


@contextlib.contextmanager
def _file_lease(path: Path, exclusive: bool) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise WriterConflict(f"{_held_by(exclusive)} ({path}): {_EXPLAIN}") from exc
        yield
    finally:
        os.close(fd)  # releases the lock


def _held_by(exclusive: bool) -> str:
    if exclusive:
        return "another process is writing this database"
    return "an embedded-mode labelloop serve is writing this database"
