"""`labelloop export`: a dataset pulled through the API into a JSONL, CSV or Parquet file, in
constant memory, written to a temporary file first so that a failed export leaves nothing behind."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import orjson

from service.client import Client
from service.client.frames import COLUMNS, JSON_COLUMNS

Format = Literal["jsonl", "csv", "parquet"]
PARQUET_ROWS = 10_000  # rows per Parquet row group: what the writer holds at a time


class _Writer(Protocol):
    def write(self, rows: list[dict[str, Any]]) -> None: ...
    def close(self) -> None: ...


class _Jsonl:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.out.write(b"".join(orjson.dumps(row) + b"\n" for row in rows))

    def close(self) -> None:
        pass


class _Csv:
    """As the API's format=csv: JSON columns as their JSON text, None as an empty cell."""

    def __init__(self, out: IO[bytes]) -> None:
        self.text = open(out.fileno(), "w", newline="", encoding="utf-8", closefd=False)  # noqa: SIM115
        self.writer = csv.writer(self.text)
        self.writer.writerow(COLUMNS)

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.writer.writerows([_cell(name, row.get(name)) for name in COLUMNS] for row in rows)

    def close(self) -> None:
        self.text.close()


def _cell(name: str, value: Any) -> Any:
    if value is None:
        return ""
    return orjson.dumps(value).decode() if name in JSON_COLUMNS else value


class _Parquet:
    def __init__(self, out: IO[bytes]) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise SystemExit("labelloop export: Parquet needs pyarrow: pip install 'labelloop[dataframes]'") from exc
        from service.client.frames import arrow_schema

        self.writer = pq.ParquetWriter(out, arrow_schema())

    def write(self, rows: list[dict[str, Any]]) -> None:
        from service.client.frames import to_arrow

        self.writer.write_table(to_arrow(rows))

    def close(self) -> None:
        self.writer.close()


WRITERS: dict[str, Callable[[IO[bytes]], _Writer]] = {"jsonl": _Jsonl, "csv": _Csv, "parquet": _Parquet}


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def export(
    client: Client,
    use_case: str,
    fmt: Format,
    path: Path,
    since: int = 0,
    final_only: bool = False,
    progress: Any = None,
) -> tuple[int, int]:
    """Rows written and the seq to resume from. progress(rows_so_far) is called per chunk."""
    dataset = client.iter_dataset(use_case, since=since, final_only=final_only)
    partial = path.with_name(f".{path.name}.partial")
    written = 0
    try:
        with partial.open("wb") as out:
            writer = WRITERS[fmt](out)
            try:
                for chunk in _chunks(dataset, PARQUET_ROWS if fmt == "parquet" else 1000):
                    writer.write(chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(written)
            finally:
                writer.close()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return written, dataset.last_seq
