"""The record contract: a prediction or an event as apps send it, over HTTP or straight to Kafka.
Strict: wrong types are rejected, never coerced. Version 1; docs/kafka-contract.md describes it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, StrictStr

from service.core.model import EventRecord, EventValue, PredictionRecord

Id = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=256)]


def _timestamp_text(value: Any) -> Any:
    # pydantic would read a number as Unix seconds; the contract is RFC 3339 text with an offset.
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string with an offset, e.g. 2026-11-02T12:00:00Z")
    return value


def _scalar(value: Any) -> EventValue:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError("must be a boolean, a number or a string")


Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp_text)]
Value = Annotated[EventValue, PlainValidator(_scalar, json_schema_input_type=bool | int | float | str | None)]


class PredictionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_id: Id
    use_case: Name
    model: Name | None = None
    model_version: Name | None = None
    served_at: Timestamp | None = Field(None, description="RFC 3339 with offset; default: now.")
    subject_id: Id | None = Field(None, description="The user or entity the prediction was served to.")
    features: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    context: dict[str, Any] | None = None

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
    payload: dict[str, Any] | None = None

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
