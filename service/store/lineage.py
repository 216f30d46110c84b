"""Reads about predictions: their use cases, and one's lineage (its events, how each was used,
every revision of its label)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.model import LabelStatus
from service.store.database import one_of
from service.store.records import chunks
from service.store.tables import events, label_history, predictions


async def use_cases_of(conn: AsyncConnection, prediction_ids: list[str]) -> dict[str, str]:
    """The use case of each stored prediction among these ids."""
    found: dict[str, str] = {}
    for chunk in chunks(prediction_ids):
        result = await conn.execute(
            select(predictions.c.prediction_id, predictions.c.use_case).where(
                one_of(conn, predictions.c.prediction_id, chunk)
            )
        )
        found.update({pid: use_case for pid, use_case in result})
    return found


class Erased(Exception):
    """The prediction was erased with its subject: it has no lineage any more."""


async def lineage(conn: AsyncConnection, prediction_id: str) -> dict[str, Any] | None:
    """None for an unknown prediction; Erased for an erased one."""
    row = (await conn.execute(select(predictions).where(predictions.c.prediction_id == prediction_id))).one_or_none()
    if row is None:
        return None
    p = row._mapping
    if p["label_status"] == LabelStatus.ERASED:
        raise Erased(prediction_id)
    event_rows = await conn.execute(
        select(events).where(events.c.prediction_id == prediction_id).order_by(events.c.occurred_at, events.c.event_id)
    )
    history_rows = await conn.execute(
        select(label_history).where(label_history.c.prediction_id == prediction_id).order_by(label_history.c.seq)
    )
    return {
        "prediction": {
            k: p[k]
            for k in (
                "prediction_id",
                "use_case",
                "model",
                "model_version",
                "served_at",
                "subject_id",
                "features",
                "output",
                "context",
                "received_at",
            )
        },
        "window_end": p["window_end"],
        "seal_at": p["seal_at"],
        "phase": p["phase"],
        "label": None
        if p["label_kind"] is None
        else {
            "label": p["label"],
            "label_kind": p["label_kind"],
            "status": p["label_status"],
            "rule": p["label_rule"],
            "sources": p["label_sources"],
            "revision": p["revision"],
            "seq": p["seq"],
            "feedback_delay_s": p["feedback_delay_s"],
        },
        "events": [
            {
                k: e._mapping[k]
                for k in (
                    "event_id",
                    "type",
                    "occurred_at",
                    "value",
                    "actor",
                    "payload",
                    "received_at",
                    "disposition",
                    "reason",
                )
            }
            for e in event_rows
        ],
        "history": [
            {
                k: h._mapping[k]
                for k in (
                    "revision",
                    "seq",
                    "label",
                    "kind",
                    "rule",
                    "sources",
                    "status",
                    "feedback_delay_s",
                    "recorded_at",
                    "watermark",
                    "policy",
                )
            }
            for h in history_rows
        ],
    }
