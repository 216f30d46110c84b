"""Records as the store receives them: content digests, duplicates and conflicts, id chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from service.core.model import EventRecord, PredictionRecord, Source
from service.core.validation import InvalidRecord

CHUNK = 1000  # ids per lookup: SQLite allows 32,766 parameters per statement
# The content digest of an erased prediction: whatever is sent again under its id is a duplicate.
ERASED_HASH = "erased"


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


class Rejected(Exception):
    """One submission (a request's records) of a unit of work that the policies or the store
    refuse. Nothing of the unit may be committed: the caller rolls back and may apply the other
    submissions again without it."""

    def __init__(self, submission: int, error: InvalidRecord | RecordConflict) -> None:
        super().__init__(f"submission {submission}: {error}")
        self.submission = submission
        self.error = error


Keyed = tuple[str, str, Any]  # id, content digest, record


def split_duplicates(
    field: str, submissions: Sequence[Sequence[Keyed]], stored: dict[str, str]
) -> tuple[list[Keyed], list[IngestResult]]:
    """The records to store, and each submission's accepted and duplicate counts. A record whose
    id is stored, or came earlier in this unit, with the same content is a duplicate, and so is
    anything under an erased prediction's id. With other content it is a conflict: Rejected for
    the first submission that has one, naming its ids (as "already stored" when a stored record or
    an earlier submission holds the id)."""
    fresh: list[Keyed] = []
    results: list[IngestResult] = []
    seen = dict(stored)
    brought_by: dict[str, int] = {}  # id -> the submission that brought it in this unit
    for index, keyed in enumerate(submissions):
        accepted = duplicates = 0
        conflicts: set[str] = set()
        for key, digest, record in keyed:
            known = seen.get(key)
            if known is None:
                seen[key] = digest
                brought_by[key] = index
                fresh.append((key, digest, record))
                accepted += 1
            elif known in (digest, ERASED_HASH):
                duplicates += 1
            else:
                conflicts.add(key)
        elsewhere = {key for key in conflicts if brought_by.get(key) != index}
        if elsewhere:
            raise Rejected(index, RecordConflict(field, sorted(elsewhere), "already stored with different content"))
        if conflicts:
            raise Rejected(
                index, RecordConflict(field, sorted(conflicts), "repeated in this request with different content")
            )
        results.append(IngestResult(accepted=accepted, duplicates=duplicates))
    return fresh, results
