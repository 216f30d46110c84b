"""What the sync and async clients share, without I/O: records as JSON, the outbox that batches
them, retry timing, and how an error answer becomes an exception."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

DEFAULT_URL = "http://127.0.0.1:8000"
RETRIED_STATUSES = frozenset({429, 502, 503, 504})  # nothing was stored: the same request may go again
Kind = Literal["predictions", "events"]
KINDS: tuple[Kind, ...] = ("predictions", "events")  # predictions first: their events then join at once
PATHS: dict[Kind, str] = {"predictions": "/v1/predictions", "events": "/v1/events"}


class LabelloopError(Exception):
    """An answer that is not a success, or a server that could not be reached."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the server refused (4xx naming it): it is not retried."""

    kind: Kind
    record: dict[str, Any]
    reason: str


class Undelivered(LabelloopError):
    """Records that background sending could not deliver: refused ones, and those still failing
    after every retry (kept, so a later flush can try them again)."""

    def __init__(self, rejected: list[Rejected], failing: int, cause: str | None) -> None:
        parts = [f"{len(rejected)} records refused"] if rejected else []
        if failing:
            parts.append(f"{failing} records not delivered yet ({cause})")
        super().__init__("; ".join(parts))
        self.rejected = rejected
        self.failing = failing


@dataclass(frozen=True, slots=True)
class Receipt:
    accepted: int
    duplicates: int | None  # None in Kafka mode: duplicates are recognised by the joiners


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with jitter, capped; a server's Retry-After is honoured."""

    attempts: int = 6
    base: float = 0.2
    cap: float = 10.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(self.cap, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: use our own backoff
        backoff: float = min(self.cap, self.base * 2**attempt)
        return backoff * random.uniform(0.5, 1.0)


def env_settings(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Client settings from LABELLOOP_URL and LABELLOOP_API_KEY."""
    return {"url": env.get("LABELLOOP_URL", DEFAULT_URL), "api_key": env.get("LABELLOOP_API_KEY") or None}


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _time(value: datetime | str | None) -> str:
    if value is None:
        return datetime.now(UTC).isoformat()
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("naive datetime: give it a timezone (datetime.now(UTC))")
    return value.isoformat()


def prediction(
    prediction_id: str, use_case: str, served_at: datetime | str | None = None, **fields: Any
) -> dict[str, Any]:
    """A prediction as the API takes it; served_at defaults to now, stamped when logged (not when a
    batch is sent), so the feedback delay is measured from the moment of serving."""
    record = {"prediction_id": prediction_id, "use_case": use_case, "served_at": _time(served_at)}
    return record | {k: v for k, v in fields.items() if v is not None}


def event(
    event_id: str, prediction_id: str, type: str, occurred_at: datetime | str | None = None, **fields: Any
) -> dict[str, Any]:
    record = {"event_id": event_id, "prediction_id": prediction_id, "type": type, "occurred_at": _time(occurred_at)}
    return record | {k: v for k, v in fields.items() if v is not None}


def encode_batch(kind: Kind, records: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({kind: records})


def receipt(body: Any) -> Receipt:
    return Receipt(accepted=int(body["accepted"]), duplicates=body.get("duplicates"))


def error(status: int, content: bytes, what: str) -> LabelloopError:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = content.decode(errors="replace")
    return LabelloopError(f"{what}: {status} {body}", status=status, body=body)


ID_FIELDS: dict[Kind, str] = {"predictions": "prediction_id", "events": "event_id"}


def refused_indexes(kind: Kind, exc: LabelloopError, batch: list[dict[str, Any]]) -> dict[int, str]:
    """The records of a refused batch that the answer names, by position (a 422's loc
    body.<kind>[i]) or by id (a 409's ids), with why; empty when it names none: then the batch is
    refused as a whole."""
    detail = exc.body.get("detail") if isinstance(exc.body, dict) else None
    named: dict[int, str] = {}
    for problem in detail or []:
        loc, why = problem.get("loc") or [], f"{problem.get('field')}: {problem.get('msg')}"
        if len(loc) >= 3 and loc[0] == "body" and loc[1] == kind and isinstance(loc[2], int) and loc[2] < len(batch):
            named[loc[2]] = why
        ids = set(problem.get("ids") or ())
        named.update({i: why for i, record in enumerate(batch) if record.get(ID_FIELDS[kind]) in ids})
    return named


def dataset_row(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    row: dict[str, Any] = orjson.loads(line)
    return row


@dataclass
class Outbox:
    """Records waiting to be sent, per kind, at most `capacity` in all."""

    batch_size: int
    capacity: int
    waiting: dict[Kind, list[dict[str, Any]]] = field(default_factory=lambda: {k: [] for k in KINDS})
    oldest: float | None = None  # when the oldest waiting record was added (monotonic seconds)

    def __len__(self) -> int:
        return sum(len(v) for v in self.waiting.values())

    def room(self) -> int:
        return self.capacity - len(self)

    def add(self, kind: Kind, records: Iterable[dict[str, Any]], now: float) -> None:
        if self.oldest is None:
            self.oldest = now
        self.waiting[kind].extend(records)

    def due(self, now: float, interval: float) -> bool:
        return self.full() or self.expired(now, interval)

    def full(self) -> bool:
        return any(len(records) >= self.batch_size for records in self.waiting.values())

    def expired(self, now: float, interval: float) -> bool:
        return self.oldest is not None and now - self.oldest >= interval

    def take(self, whole_batches_only: bool = False) -> list[tuple[Kind, list[dict[str, Any]]]]:
        """What is waiting, as batches of at most batch_size, predictions first; with
        whole_batches_only, just the full batches (the rest waits for more, or for its time)."""
        batches = []
        for kind in KINDS:
            records = self.waiting[kind]
            end = len(records) - len(records) % self.batch_size if whole_batches_only else len(records)
            batches += [(kind, records[i : min(i + self.batch_size, end)]) for i in range(0, end, self.batch_size)]
            self.waiting[kind] = records[end:]
        if not len(self):
            self.oldest = None
        return batches

    def put_back(self, kind: Kind, records: list[dict[str, Any]], now: float) -> None:
        """Records a send could not deliver, ahead of what came since."""
        self.waiting[kind][:0] = records
        self.oldest = now if self.oldest is None else min(self.oldest, now)
