"""The values the label core reasons about, free of any storage or transport type."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from service.core.policy import LabelKind

EventValue = float | int | str | bool | None
LabelValue = float | int | str


class LabelStatus(StrEnum):
    PROVISIONAL = "provisional"
    FINAL = "final"
    ERASED = "erased"  # a dataset tombstone: its subject was erased, the trainer's copy should go too


class Disposition(StrEnum):
    """How a stored event was used; its prediction's lineage shows it."""

    ORPHAN = "orphan"  # its prediction not seen yet
    COUNTED = "counted"
    TOO_LATE = "too_late"  # occurred after the seal, or arrived once the label was final
    INVALID = "invalid"  # its value makes no label under its prediction's use case
    EXPIRED_ORPHAN = "expired_orphan"  # its prediction never came within the orphan TTL


class Phase(StrEnum):
    """Where a prediction stands against the watermark."""

    OPEN = "open"  # watermark before the window end W
    CLOSED = "closed"  # W passed, seal S not yet: late events may still revise
    FINAL = "final"  # S passed: the label never changes again


@dataclass(frozen=True, slots=True)
class Evidence:
    """An event joined to its prediction, as resolution sees it."""

    event_id: str
    type: str
    occurred_at: datetime
    value: EventValue
    actor: str | None


@dataclass(frozen=True, slots=True)
class Source:
    event_id: str
    type: str
    actor: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """A resolved label: its value, its kind, the rule that made it and the events behind it."""

    label: LabelValue
    kind: LabelKind
    rule: str
    sources: tuple[Source, ...]
    feedback_delay_s: float | None


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """A served prediction as an app reported it (served_at None: the time it was received)."""

    prediction_id: str
    use_case: str
    served_at: datetime | None = None
    model: str | None = None
    model_version: str | None = None
    subject_id: str | None = None
    features: dict[str, object] | None = None
    output: dict[str, object] | None = None
    context: dict[str, object] | None = None
    # When labelloop first received it; stands in for a missing served_at, and is no part of the
    # content, so a retry of the same record is still a duplicate.
    received_at: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A behavioral event as an app reported it (occurred_at None: the time it was received)."""

    event_id: str
    prediction_id: str
    type: str
    occurred_at: datetime | None = None
    value: EventValue = None
    actor: str | None = None
    payload: dict[str, object] | None = None
    received_at: datetime | None = field(default=None, compare=False)  # as for predictions


def event_time(record: PredictionRecord | EventRecord, now: datetime) -> datetime:
    """Where a record stands in event time: when it was served or occurred as the app said, else
    when labelloop received it (else now)."""
    stated = record.served_at if isinstance(record, PredictionRecord) else record.occurred_at
    return stated or record.received_at or now
