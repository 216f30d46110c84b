"""Many rows in one statement. On PostgreSQL the rows travel as one array per column and the
server unnests them: one statement to parse, plan and execute, where an executemany runs one
per row and SQLAlchemy processes every parameter of every row in Python. Measured on a joiner
over 100,000 preloaded records: the bulk inserts take 30-60% less time and the joiner went from
2,270 to 2,960 records/s. SQLite, in-process, keeps executemany, of plain tuples encoded here
exactly as the column types would (datetimes as SQLAlchemy's fixed-width UTC text, JSON as text),
without Core's per-parameter processing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache, partial
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import JSON, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from service.store.records import CHUNK
from service.store.sqlite_inline import InlineConnection
from service.store.types import UTCDateTime

Row = dict[str, Any]
_UNSEEN = object()
Params = tuple[Any, ...] | list[tuple[Any, ...]]
_PG = postgresql.dialect()  # type: ignore[no-untyped-call]
_SQLITE = sqlite.dialect()


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _same(value: Any) -> Any:
    return value


@cache
def _column_codec(table: Table, name: str) -> tuple[str, Callable[[Any], Any]]:
    """The PostgreSQL array type of a column and how a Python value becomes one of its elements."""
    column_type = table.c[name].type
    sql_type = column_type.compile(dialect=_PG)
    if isinstance(column_type.dialect_impl(_PG), JSON):
        return sql_type, _json_text  # asyncpg sends jsonb elements as their text
    if isinstance(column_type, UTCDateTime):
        return sql_type, partial(column_type.process_bind_param, dialect=_PG)  # aware, UTC
    return sql_type, _same


def _sqlite_datetime(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME text of a UTC instant, which sorts like the instants."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: attach a timezone")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # without its "+00:00"


@cache
def _sqlite_codec(table: Table, name: str) -> Callable[[Any], Any] | None:
    """How a value of the column becomes its SQLite parameter; None: as it is."""
    column_type = table.c[name].type
    if isinstance(column_type.dialect_impl(_SQLITE), JSON):
        return _json_text
    if isinstance(column_type, UTCDateTime):
        return _sqlite_datetime
    return None


def _tuples(table: Table, names: Sequence[str], rows: Sequence[Row]) -> list[tuple[Any, ...]]:
    getter = itemgetter(*names)
    values = getter if len(names) > 1 else lambda row: (getter(row),)  # itemgetter of one gives the value
    converted = [(i, codec) for i, name in enumerate(names) if (codec := _sqlite_codec(table, name)) is not None]
    # A unit's rows share many values (its time, its watermark): each column converts a value
    # once while the next row holds the same object.
    last: list[Any] = [_UNSEEN] * len(converted)
    done: list[Any] = [None] * len(converted)
    tuples = []
    for row in rows:
        params = list(values(row))
        for n, (i, convert) in enumerate(converted):
            value = params[i]
            if value is not last[n]:
                last[n], done[n] = value, convert(value)
            params[i] = done[n]
        tuples.append(tuple(params))
    return tuples


def _arrays(table: Table, names: Sequence[str], rows: Sequence[Row]) -> list[list[Any]]:
    arrays = []
    for name in names:
        convert = _column_codec(table, name)[1]
        arrays.append([convert(row[name]) for row in rows])
    return arrays


def unnest(table: Table, names: Sequence[str], first: int = 1) -> str:
    """The rows of one array parameter per column, typed as the table's columns; the first array
    is parameter `first` (a statement of several unnests numbers them on)."""
    marks = enumerate(names, first)
    return "unnest(" + ", ".join(f"${i}::{_column_codec(table, n)[0]}[]" for i, n in marks) + ")"


def _inline(conn: AsyncConnection) -> InlineConnection | None:
    """The embedded writer's own SQLite connection under `conn`, if it is one."""
    sync = conn.sync_connection
    driver = None if sync is None or sync.closed else sync.connection.driver_connection
    return driver if isinstance(driver, InlineConnection) else None


async def run(conn: AsyncConnection, sql: str, params: Params = ()) -> list[Any]:
    """A plain driver statement, run once per tuple when `params` is a list; its rows. On the
    embedded writer's inline SQLite connection, without SQLAlchemy's execution context (a unit
    of work runs about 13 of these); its errors raised as SQLAlchemy's, as they would be."""
    inline = _inline(conn)
    if inline is None:
        result = await conn.exec_driver_sql(sql, params)
        return list(result.all()) if result.returns_rows else []
    try:
        return await inline.run(sql, params)
    except sqlite3.Error as exc:
        raise sa_exc.DBAPIError.instance(sql, params, exc, sqlite3.Error, hide_parameters=True) from exc


async def insert_rows(conn: AsyncConnection, table: Table, rows: Sequence[Row]) -> None:
    """INSERT every row (all with the same keys)."""
    if not rows:
        return
    names = list(rows[0])
    columns = ", ".join(f'"{n}"' for n in names)
    if conn.dialect.name != "postgresql":
        marks = ", ".join("?" * len(names))
        await run(conn, f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", _tuples(table, names, rows))
        return
    sql = f"INSERT INTO {table.name} ({columns}) SELECT * FROM {unnest(table, names)}"
    await run(conn, sql, tuple(_arrays(table, names, rows)))


async def update_rows(conn: AsyncConnection, table: Table, key: str, rows: Sequence[Row]) -> None:
    """UPDATE the row whose `key` column equals each row's `key` value with that row's other
    values (all rows with the same keys)."""
    if not rows:
        return
    names = list(rows[0])
    targets = [n for n in names if n != key]
    if conn.dialect.name != "postgresql":
        assignments = ", ".join(f'"{n}" = ?' for n in targets)
        sql = f'UPDATE {table.name} SET {assignments} WHERE "{key}" = ?'
        await run(conn, sql, _tuples(table, [*targets, key], rows))
        return
    assignments = ", ".join(f'"{n}" = u."{n}"' for n in targets)
    aliases = ", ".join(f'"{n}"' for n in names)
    sql = (
        f"UPDATE {table.name} AS t SET {assignments} FROM {unnest(table, names)} AS u({aliases})"
        f' WHERE t."{key}" = u."{key}"'
    )
    await run(conn, sql, tuple(_arrays(table, names, rows)))


async def upsert_rows(conn: AsyncConnection, table: Table, key: str, rows: Sequence[Row]) -> None:
    """INSERT every row (all with the same keys, none twice), or where a row with its `key` is
    stored, set that row's other columns to its values."""
    if not rows:
        return
    names = list(rows[0])
    columns = ", ".join(f'"{n}"' for n in names)
    assignments = ", ".join(f'"{n}" = excluded."{n}"' for n in names if n != key)
    conflict = f' ON CONFLICT ("{key}") DO UPDATE SET {assignments}'
    if conn.dialect.name != "postgresql":
        marks = ", ".join("?" * len(names))
        sql = f"INSERT INTO {table.name} ({columns}) VALUES ({marks}){conflict}"
        await run(conn, sql, _tuples(table, names, rows))
        return
    sql = f"INSERT INTO {table.name} ({columns}) SELECT * FROM {unnest(table, names)}{conflict}"
    await run(conn, sql, tuple(_arrays(table, names, rows)))


async def values_by_key(
    conn: AsyncConnection, table: Table, key: str, column: str, keys: Sequence[str]
) -> dict[str, Any]:
    """{key: column} of the stored rows whose `key` is one of `keys` (a text column): a plain
    driver statement per 1,000 keys, one array parameter on PostgreSQL."""
    found: dict[str, Any] = {}
    for start in range(0, len(keys), CHUNK):
        chunk = list(keys[start : start + CHUNK])
        select = f'SELECT "{key}", "{column}" FROM {table.name} WHERE "{key}"'
        params: tuple[Any, ...]
        if conn.dialect.name == "postgresql":
            sql, params = f"{select} = ANY($1::varchar[])", (chunk,)
        else:
            sql, params = f"{select} IN ({', '.join('?' * len(chunk))})", tuple(chunk)
        rows = await run(conn, sql, params)
        found.update({stored_key: value for stored_key, value in rows})
    return found


def driver_time(conn: AsyncConnection, value: datetime) -> Any:
    """A UTC instant as a driver parameter compared with stored UTCDateTime values."""
    return value if conn.dialect.name == "postgresql" else _sqlite_datetime(value)
