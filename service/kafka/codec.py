"""Kafka message values <-> records. Contract version 1 (docs/kafka-contract.md): one JSON object
per message, the same fields as the HTTP API, plus optional `schema_version` (1) and `received_at`
(set by the API; the message timestamp stands in when absent). Key: the prediction_id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from service import strict_json
from service.contract import DEFAULT_LIMITS, EventIn, Limits, PredictionIn
from service.core.model import EventRecord, PredictionRecord

SCHEMA_VERSION = 1


class PoisonRecord(Exception):
    """A message that can never become a record; it goes to the dead-letter topic."""


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def encode(record: PredictionRecord | EventRecord) -> bytes:
    if isinstance(record, PredictionRecord):
        fields: dict[str, Any] = {
            "prediction_id": record.prediction_id,
            "use_case": record.use_case,
            "served_at": _time(record.served_at),
            "model": record.model,
            "model_version": record.model_version,
            "subject_id": record.subject_id,
            "features": record.features,
            "output": record.output,
            "context": record.context,
        }
    else:
        fields = {
            "event_id": record.event_id,
            "prediction_id": record.prediction_id,
            "type": record.type,
            "occurred_at": _time(record.occurred_at),
            "value": record.value,
            "actor": record.actor,
            "payload": record.payload,
        }
    message = {k: v for k, v in fields.items() if v is not None}
    message["schema_version"] = SCHEMA_VERSION
    if record.received_at is not None:
        message["received_at"] = record.received_at.isoformat()
    return orjson.dumps(message)


def _envelope(value: bytes | None, timestamp_ms: int) -> tuple[dict[str, Any], datetime]:
    if value is None:
        raise PoisonRecord("empty message (tombstone)")
    try:
        body = strict_json.loads(value)
    except strict_json.StrictJSONError as exc:
        raise PoisonRecord(str(exc)) from exc
    if not isinstance(body, dict):
        raise PoisonRecord("the message must be a JSON object")
    version = body.pop("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        raise PoisonRecord(f"schema_version {version!r} is not supported (this joiner reads {SCHEMA_VERSION})")
    received = body.pop("received_at", None)
    if received is not None and not isinstance(received, str):
        raise PoisonRecord("received_at: must be an RFC 3339 timestamp string")
    try:
        received_at = (
            datetime.fromisoformat(received)
            if isinstance(received, str)
            else datetime.fromtimestamp(timestamp_ms / 1000, UTC)
        )
    except ValueError as exc:
        raise PoisonRecord(f"received_at: {exc}") from exc
    if received_at.tzinfo is None:
        raise PoisonRecord("received_at: needs a timezone offset")
    return body, received_at


def _validate(model: type[BaseModel], body: dict[str, Any], limits: Limits) -> Any:
    try:
        return model.model_validate(body, context=limits)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "message"
        raise PoisonRecord(f"{field}: {first['msg']}") from exc


def decode_prediction(value: bytes | None, timestamp_ms: int, limits: Limits = DEFAULT_LIMITS) -> PredictionRecord:
    body, received_at = _envelope(value, timestamp_ms)
    item: PredictionIn = _validate(PredictionIn, body, limits)
    return item.to_record(received_at)


def decode_event(value: bytes | None, timestamp_ms: int, limits: Limits = DEFAULT_LIMITS) -> EventRecord:
    body, received_at = _envelope(value, timestamp_ms)
    item: EventIn = _validate(EventIn, body, limits)
    return item.to_record(received_at)
