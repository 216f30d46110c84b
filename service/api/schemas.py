"""Request bodies as the apps send them. Strict: wrong types are rejected, never coerced."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from service.core.model import EventRecord, PredictionRecord

Id = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=256)]


class PredictionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_id: Id
    use_case: Name
    model: Name | None = None
    model_version: Name | None = None
    served_at: AwareDatetime | None = Field(None, description="RFC 3339 with offset; default: now.")
    subject_id: Id | None = Field(None, description="The user or entity the prediction was served to.")
    features: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    context: dict[str, Any] | None = None

    def to_record(self) -> PredictionRecord:
        return PredictionRecord(**self.model_dump())


class PredictionBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    predictions: list[PredictionIn]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: Id = Field(description="Unique per event: the idempotency key.")
    prediction_id: Id
    type: Name
    occurred_at: AwareDatetime | None = Field(None, description="RFC 3339 with offset; default: now.")
    value: StrictBool | StrictInt | StrictFloat | StrictStr | None = None
    actor: Name | None = Field(None, description="Who gave it: user:42, annotator:ana, system.")
    payload: dict[str, Any] | None = None

    def to_record(self) -> EventRecord:
        return EventRecord(**self.model_dump())


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn]


class Accepted(BaseModel):
    accepted: int
    duplicates: int
