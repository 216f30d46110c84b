"""The record contract: a prediction or an event as apps send it, over HTTP or straight to Kafka.
Strict: wrong types are rejected, never coerced. Version 1; docs/kafka-contract.md describes it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictStr,
    ValidationInfo,
)

from service.core.model import EventRecord, EventValue, PredictionRecord

_UNADDRESSABLE = re.compile(r"[/\x00-\x1f\x7f]")


def _addressable(text: str) -> str:
    # A "/" could not be addressed as a path segment (GET /v1/predictions/{id}); control characters
    # (NUL is refused by PostgreSQL) are never meant. Lone surrogates never get here: pydantic
    # refuses them in any string.
    found = _UNADDRESSABLE.search(text)
    if found:
        raise ValueError(f"holds {found.group()!r}; ids and names hold no '/' and no control characters")
    return text


Id = Annotated[StrictStr, Field(min_length=1, max_length=256), AfterValidator(_addressable)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=256), AfterValidator(_addressable)]


@dataclass(frozen=True)
class Limits:
    """Bounds on the free-form JSON fields (features, output, context, payload); Settings sets them,
    passed as the validation context."""

    field_bytes: int = 256 * 1024
    depth: int = 32
    keys: int = 1000
    string_length: int = 65536


def _bad_string(text: str, limits: Limits) -> str | None:
    if len(text) > limits.string_length:
        return f"a string of {len(text)} characters; at most {limits.string_length}"
    if "\x00" in text:
        return "a string holds a NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "a string holds a lone surrogate (not UTF-8)"
    return None


def check_json(value: Any, limits: Limits) -> int:
    """The field's encoded size; ValueError naming the first bound it breaks."""
    keys = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limits.depth:
                raise ValueError(f"nested deeper than {limits.depth} levels")
            if isinstance(item, dict):
                keys += len(item)
                if keys > limits.keys:
                    raise ValueError(f"more than {limits.keys} keys")
                for key in item:
                    if (reason := _bad_string(key, limits)) is not None:
                        raise ValueError(f"key {key[:40]!r}: {reason}")
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str) and (reason := _bad_string(item, limits)) is not None:
            raise ValueError(reason)
    size = len(orjson.dumps(value))
    if size > limits.field_bytes:
        raise ValueError(f"{size} bytes as JSON; at most {limits.field_bytes}")
    return size


def _limits(info: ValidationInfo) -> Limits:
    """The limits passed as the validation context (Settings'), else the defaults."""
    return info.context if isinstance(info.context, Limits) else DEFAULT_LIMITS


def _bounded(value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
    if value is not None:
        check_json(value, _limits(info))
    return value


DEFAULT_LIMITS = Limits()
JsonObject = Annotated[dict[str, Any] | None, AfterValidator(_bounded)]


def _timestamp_text(value: Any) -> Any:
    # pydantic would read a number as Unix seconds; the contract is RFC 3339 text with an offset.
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string with an offset, e.g. 2026-11-02T12:00:00Z")
    return value


def _scalar(value: Any, info: ValidationInfo) -> EventValue:
    if isinstance(value, str):
        if (reason := _bad_string(value, _limits(info))) is not None:
            raise ValueError(reason)
        return value
    if value is None or isinstance(value, bool | int | float):
        return value
    raise ValueError("must be a boolean, a number or a string")


def _in_utc(value: datetime) -> datetime:
    # The store keeps UTC, and an offset can carry an instant past the calendar's ends:
    # 0001-01-01T00:00:00+00:10 is in the year 0 in UTC.
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("outside the years 1 to 9999 once in UTC") from None
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]
Timestamp = Annotated[Instant, BeforeValidator(_timestamp_text)]
Value = Annotated[EventValue, PlainValidator(_scalar, json_schema_input_type=bool | int | float | str | None)]


class PredictionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_id: Id
    use_case: Name
    model: Name | None = None
    model_version: Name | None = None
    served_at: Timestamp | None = Field(None, description="RFC 3339 with offset; default: now.")
    subject_id: Id | None = Field(None, description="The user or entity the prediction was served to.")
    features: JsonObject = None
    output: JsonObject = None
    context: JsonObject = None

    def to_record(self, received_at: datetime) -> PredictionRecord:
        # Fields as validated, no copy; named one by one (dict(model) costs three times as much).
        return PredictionRecord(
            prediction_id=self.prediction_id,
            use_case=self.use_case,
            served_at=self.served_at,
            model=self.model,
            model_version=self.model_version,
            subject_id=self.subject_id,
            features=self.features,
            output=self.output,
            context=self.context,
            received_at=received_at,
        )


class PredictionBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    predictions: list[PredictionIn]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: Id = Field(description="Unique per event: the idempotency key.")
    prediction_id: Id
    type: Name
    occurred_at: Timestamp | None = Field(None, description="RFC 3339 with offset; default: now.")
    value: Value = None
    actor: Name | None = Field(None, description="Who gave it: user:42, annotator:ana, system.")
    payload: JsonObject = None

    def to_record(self, received_at: datetime) -> EventRecord:
        return EventRecord(
            event_id=self.event_id,
            prediction_id=self.prediction_id,
            type=self.type,
            occurred_at=self.occurred_at,
            value=self.value,
            actor=self.actor,
            payload=self.payload,
            received_at=received_at,
        )


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn]


class Accepted(BaseModel):
    accepted: int
    duplicates: int | None = Field(description="None in Kafka mode: the joiner recognises duplicates.")
