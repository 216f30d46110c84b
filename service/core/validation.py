"""Checks a record must pass against the policies before anything of its request is stored or
queued. Shared by the embedded store and the Kafka-mode API."""

from __future__ import annotations

import re

from service.core.model import EventRecord, PredictionRecord
from service.core.policy import PolicySet
from service.core.quality import InvalidOutput, model_output
from service.core.resolution import InvalidValue, validate_value
from service.core.windows import deadlines

MAX_SUBJECT = 256
_UNADDRESSABLE = re.compile(r"[/\x00-\x1f\x7f]")  # as the contract refuses in ids


class InvalidRecord(Exception):
    """A record the policies reject; nothing of its request may be stored."""

    def __init__(self, collection: str, index: int, field: str, reason: str) -> None:
        super().__init__(f"{collection}[{index}].{field}: {reason}")
        self.loc = (collection, index, field)
        self.index = index
        self.reason = reason


def check_prediction(policies: PolicySet, index: int, record: PredictionRecord) -> None:
    if record.use_case not in policies.use_cases:
        raise InvalidRecord(
            "predictions",
            index,
            "use_case",
            f"unknown use case {record.use_case!r}; known: {sorted(policies.use_cases)}",
        )
    subject = record.subject_id
    if subject is not None and (len(subject) > MAX_SUBJECT or _UNADDRESSABLE.search(subject)):
        # Only a subject taken from a features or context key can get here: the contract checks subject_id.
        field = policies.use_cases[record.use_case].subject
        raise InvalidRecord(
            "predictions",
            index,
            field,
            f"names the subject: at most {MAX_SUBJECT} characters, no '/' or control characters",
        )
    policy = policies.use_cases[record.use_case]
    try:
        model_output(policy, record.output)
    except InvalidOutput as exc:
        raise InvalidRecord("predictions", index, str(policy.score or policy.estimate), str(exc)) from None
    if record.served_at is not None:
        try:
            deadlines(policy, record.served_at)
        except OverflowError:
            raise InvalidRecord(
                "predictions", index, "served_at", "so late that its window and seal would end after the year 9999"
            ) from None


def check_event(policies: PolicySet, index: int, record: EventRecord, use_case: str | None) -> None:
    """use_case: that of the event's prediction, or None while the prediction is not known; such an
    event must make sense for at least one use case."""
    if use_case is not None:
        candidates = [policies.use_cases[use_case]]
        allowed = sorted(candidates[0].events)
        scope = f"use case {use_case!r}"
    else:
        candidates = list(policies.use_cases.values())
        allowed = sorted(policies.event_types())
        scope = "any use case (its prediction is not known yet)"
    candidates = [p for p in candidates if record.type in p.events]
    if not candidates:
        raise InvalidRecord(
            "events", index, "type", f"unknown event type {record.type!r} for {scope}; allowed: {allowed}"
        )
    errors = []
    for policy in candidates:
        try:
            validate_value(policy, record.type, record.value)
            return
        except InvalidValue as exc:
            errors.append(str(exc))
    raise InvalidRecord("events", index, "value", f"{record.type} value {errors[0]}")
