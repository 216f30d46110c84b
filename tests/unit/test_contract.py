"""The contract's models and the core's records agree field for field."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from service.contract import EventIn, PredictionIn
from service.core.model import EventRecord, PredictionRecord

T = datetime(2026, 11, 2, 12, tzinfo=UTC)


def test_every_contract_field_reaches_the_record() -> None:
    """to_record names each field: one added to the contract must be added to the record too."""
    for model, record in ((PredictionIn, PredictionRecord), (EventIn, EventRecord)):
        assert set(model.model_fields) | {"received_at"} == {f.name for f in dataclasses.fields(record)}


def _fields(record: PredictionRecord | EventRecord) -> dict[str, object]:
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def test_to_record_keeps_every_value() -> None:
    prediction = PredictionIn.model_validate(
        {
            "prediction_id": "P",
            "use_case": "recsys",
            "model": "m",
            "model_version": "7",
            "served_at": "2026-11-02T12:00:00Z",
            "subject_id": "user:1",
            "features": {"f": 1},
            "output": {"score": 0.5},
            "context": {"page": "home"},
        }
    )
    record = prediction.to_record(T)
    assert {f.name: getattr(record, f.name) for f in dataclasses.fields(record)} == {
        **prediction.model_dump(),
        "received_at": T,
    }
    event = EventIn.model_validate(
        {"event_id": "E", "prediction_id": "P", "type": "rating", "value": 4, "actor": "user:1", "payload": {"a": 1}}
    )
    record_e = event.to_record(T)
    assert {f.name: getattr(record_e, f.name) for f in dataclasses.fields(record_e)} == {
        **event.model_dump(),
        "received_at": T,
    }
