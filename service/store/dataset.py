"""Dataset pages: labeled rows in seq order, as tuples or as JSON lines the database encodes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, Text, and_, case, cast, func, literal_column, null, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.model import LabelStatus
from service.core.policy import LabelKind
from service.store.tables import dataset_seqs, label_history, predictions

DATASET_COLUMNS = (
    "prediction_id",
    "model",
    "model_version",
    "served_at",
    "subject_id",
    "features",
    "output",
    "label",
    "label_kind",
    "status",
    "sources",
    "feedback_delay_s",
    "revision",
    "seq",
    "p_flip",
)

# p_flip for a row at `served_at` (None: not estimated): set for provisional implicit negatives at
# read time (service/store/flip.py); final rows carry 0, the others null.
Flip = Callable[[datetime], float | None]


@dataclass(frozen=True, slots=True)
class DatasetFilter:
    use_case: str
    since: int = 0
    model: str | None = None
    model_version: str | None = None
    served_from: datetime | None = None
    served_to: datetime | None = None
    final_only: bool = False
    as_of: int | None = None  # the dataset as it stood at this seq, from the label history


@dataclass(frozen=True, slots=True)
class _Source:
    """Where the rows come from: each DATASET_COLUMNS column, the seq and status to filter and
    order by, the FROM clause and the conditions that pick the use case's rows; `awaiting`: the
    served_at of a provisional implicit negative (null otherwise), whose p_flip is set at read."""

    columns: tuple[ColumnElement[Any], ...]
    awaiting: ColumnElement[Any]
    seq: ColumnElement[Any]
    status: ColumnElement[Any]
    select_from: Any
    where: tuple[ColumnElement[bool], ...]


_PREDICTION_FIELDS = (
    predictions.c.prediction_id,
    predictions.c.model,
    predictions.c.model_version,
    predictions.c.served_at,
    predictions.c.subject_id,
    predictions.c.features,
    predictions.c.output,
)


def _final_zero(status: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((status == LabelStatus.FINAL.value, literal_column("0.0", Float)), else_=null())


def _awaiting(kind: ColumnElement[Any], status: ColumnElement[Any]) -> ColumnElement[Any]:
    pending = and_(kind == LabelKind.IMPLICIT_NEGATIVE.value, status == LabelStatus.PROVISIONAL.value)
    return case((pending, predictions.c.served_at), else_=null())


def _source(f: DatasetFilter) -> _Source:
    if f.as_of is None:  # the current rows: one per prediction, its latest label
        label = (
            predictions.c.label,
            predictions.c.label_kind,
            predictions.c.label_status,
            predictions.c.label_sources,
            predictions.c.feedback_delay_s,
            predictions.c.revision,
            predictions.c.seq,
        )
        return _Source(
            (*_PREDICTION_FIELDS, *label, _final_zero(predictions.c.label_status)),
            _awaiting(predictions.c.label_kind, predictions.c.label_status),
            predictions.c.seq,
            predictions.c.label_status,
            predictions,
            (predictions.c.use_case == f.use_case,),
        )
    # As of a seq: each prediction's last label revision with a seq up to it.
    history, later = label_history, label_history.alias("later")
    superseded = (
        select(later.c.id)
        .where(later.c.prediction_id == history.c.prediction_id, later.c.seq > history.c.seq, later.c.seq <= f.as_of)
        .exists()
    )
    label = (
        history.c.label,
        history.c.kind,
        history.c.status,
        history.c.sources,
        history.c.feedback_delay_s,
        history.c.revision,
        history.c.seq,
    )
    return _Source(
        (*_PREDICTION_FIELDS, *label, _final_zero(history.c.status)),
        _awaiting(history.c.kind, history.c.status),
        history.c.seq,
        history.c.status,
        history.join(predictions, predictions.c.prediction_id == history.c.prediction_id),
        (predictions.c.use_case == f.use_case, history.c.seq <= f.as_of, ~superseded),
    )


def _dataset_query(f: DatasetFilter, source: _Source, after: int, limit: int, *columns: Any) -> Select[Any]:
    query = (
        select(*columns)
        .select_from(source.select_from)
        .where(*source.where, source.seq > after)
        .order_by(source.seq)
        .limit(limit)
    )
    if f.model is not None:
        query = query.where(predictions.c.model == f.model)
    if f.model_version is not None:
        query = query.where(predictions.c.model_version == f.model_version)
    if f.served_from is not None:
        query = query.where(predictions.c.served_at >= f.served_from)
    if f.served_to is not None:
        query = query.where(predictions.c.served_at < f.served_to)
    if f.final_only:
        # Tombstones too: a copy of the final rows must learn which of them to delete.
        query = query.where(source.status.in_((LabelStatus.FINAL.value, LabelStatus.ERASED.value)))
    return query


STREAM_ROWS = 10  # rows the driver holds at a time: a few MB when rows are at their largest
MAX_FETCH = 1000  # rows taken per fetch: one driver round trip each, never one per row


async def _within(
    conn: AsyncConnection, query: Select[Any], max_bytes: int, size: Callable[[Any], int]
) -> tuple[list[Any], bool]:
    """The query's rows until their size reaches max_bytes (at least one row), streamed from the
    driver so that a page of large rows is never held whole; and whether it stopped there. Each
    fetch asks for about as many rows as the budget has room for, at the sizes seen so far."""
    rows: list[Any] = []
    total = 0
    result = await conn.stream(query.execution_options(yield_per=STREAM_ROWS))
    try:
        want = STREAM_ROWS
        while chunk := await result.fetchmany(want):
            for row in chunk:
                rows.append(row)
                total += size(row)
                if total >= max_bytes:
                    return rows, True
            want = max(1, min(MAX_FETCH, (max_bytes - total) * len(rows) // max(total, 1)))
    finally:
        await result.close()
    return rows, False


def _text_size(row: Any) -> int:
    return sum(len(v) if isinstance(v, str) else 8 for v in row)


async def dataset_page(
    conn: AsyncConnection, f: DatasetFilter, after: int, limit: int, max_bytes: int, flip: Flip
) -> tuple[list[tuple[Any, ...]], bool]:
    """Up to `limit` labeled rows with seq > after, in seq order (a keyset page), as tuples in
    DATASET_COLUMNS order; the JSON columns as JSON text (or None), served_at as utc_text. Cut
    short once the rows reach max_bytes (the flag says so)."""
    source = _source(f)
    columns = [
        # JSON columns as their text: exported as they are stored, never parsed and re-encoded.
        cast(c, Text) if name in JSON_COLUMNS else utc_text(conn, c) if c is predictions.c.served_at else c
        for name, c in zip(DATASET_COLUMNS, source.columns, strict=True)
    ]
    query = _dataset_query(f, source, after, limit, *columns, source.awaiting)
    rows, cut = await _within(conn, query, max_bytes, _text_size)
    return [(*row[:-2], row[-2] if row[-1] is None else flip(row[-1])) for row in rows], cut


async def dataset_lines(
    conn: AsyncConnection, f: DatasetFilter, after: int, limit: int, max_bytes: int, flip: Flip
) -> tuple[list[tuple[str, int]], bool]:
    """The same page as JSONL lines, each with its seq. The database encodes each row as a JSON
    object: in C, from the stored JSON text, where Python would build a dict and encode it
    (measured: 3x the rows/s of a SQLite export). p_flip, the last key, is null in the provisional
    implicit negatives' lines and set here."""
    source = _source(f)
    values: list[Any] = []
    for name, column in zip(DATASET_COLUMNS, source.columns, strict=True):
        value: ColumnElement[Any] = column
        if column is predictions.c.served_at:
            value = utc_text(conn, column)
        elif name in JSON_COLUMNS and conn.dialect.name == "sqlite":
            value = func.json(column)  # stored JSON text embedded as JSON, not as a string
        values += [literal_column(f"'{name}'"), value]
    line: ColumnElement[str] = (
        cast(func.json_build_object(*values), Text)
        if conn.dialect.name == "postgresql"
        else func.json_object(*values, type_=Text)
    )
    query = _dataset_query(f, source, after, limit, line, source.seq, source.awaiting)
    rows, cut = await _within(conn, query, max_bytes, lambda row: len(row[0]))
    return [(text if served is None else _set_flip(text, flip(served)), seq) for text, seq, served in rows], cut


_NULL_END = "null}"


def _set_flip(line: str, p_flip: float | None) -> str:
    if p_flip is None:
        return line
    assert line.endswith(_NULL_END)  # p_flip is the last key, both dialects end the object so
    return f"{line[: -len(_NULL_END)]}{p_flip!r}}}"


def utc_text(conn: AsyncConnection, column: Any) -> ColumnElement[str]:
    """A stored UTC time as fixed-width RFC 3339 text, 2026-11-29T16:20:01.500000+00:00, made by
    the database so an export never converts times in Python."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"', type_=Text)
    # SQLAlchemy keeps SQLite times as naive UTC text, 2026-11-29 16:20:01.500000.
    return func.replace(cast(column, Text), " ", "T", type_=Text) + "+00:00"


JSON_COLUMNS = frozenset({"features", "output", "label", "sources"})


async def last_seq(conn: AsyncConnection, use_case: str) -> int:
    """The last seq handed out for a use case: what a dataset read now reflects (0: none yet)."""
    result = await conn.execute(select(dataset_seqs.c.last_seq).where(dataset_seqs.c.use_case == use_case))
    return int(result.scalar_one_or_none() or 0)


async def watermark_at(conn: AsyncConnection, use_case: str, seq: int) -> datetime | None:
    """The watermark when the use case's dataset stood at this seq: the one recorded with its last
    label revision up to it (None: none recorded)."""
    result = await conn.execute(
        select(label_history.c.watermark)
        .select_from(label_history.join(predictions, predictions.c.prediction_id == label_history.c.prediction_id))
        .where(predictions.c.use_case == use_case, label_history.c.seq <= seq)
        .order_by(label_history.c.seq.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()
