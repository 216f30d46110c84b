"""Records as the store receives them: content digests, duplicates and conflicts, id chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from service.core.model import EventRecord, PredictionRecord, Source

CHUNK = 1000  # ids per lookup: SQLite allows 32,766 parameters per statement


class RecordConflict(Exception):
    """An id that is already stored with different content."""

    def __init__(self, field: str, ids: Sequence[str], reason: str) -> None:
        super().__init__(f"{field} {reason}: {', '.join(ids)}")
        self.field = field
        self.ids = list(ids)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int


def content_hash(record: PredictionRecord | EventRecord) -> str:
    """A digest of the record exactly as the client sent it (defaults not filled in), so a retry
    of the same request is recognised as a duplicate."""
    content = {
        name: value.astimezone(UTC) if isinstance(value, datetime) else value  # one instant, one digest
        for name in record.__slots__
        if name != "received_at" and (value := getattr(record, name)) is not None
    }
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def source_json(source: Source) -> dict[str, str | None]:
    return {"event_id": source.event_id, "type": source.type, "actor": source.actor}


def chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def split_duplicates(
    field: str, keyed: list[tuple[str, str, Any]], stored: dict[str, str]
) -> tuple[list[tuple[str, str, Any]], int]:
    """Drop records whose id is already stored or repeated in the batch with the same content;
    raise RecordConflict naming every id whose content differs."""
    fresh: list[tuple[str, str, Any]] = []
    seen = dict(stored)
    duplicates = 0
    conflicts: set[str] = set()
    for key, digest, record in keyed:
        known = seen.get(key)
        if known is None:
            seen[key] = digest
            fresh.append((key, digest, record))
        elif known == digest:
            duplicates += 1
        else:
            conflicts.add(key)
    if conflicts & stored.keys():
        raise RecordConflict(field, sorted(conflicts & stored.keys()), "already stored with different content")
    if conflicts:
        raise RecordConflict(field, sorted(conflicts), "repeated in this request with different content")
    return fresh, duplicates
