"""insert_rows / update_rows: one statement of arrays on PostgreSQL, executemany on SQLite; the
same rows come back either way."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.bulk import insert_rows, update_rows, upsert_rows
from service.store.tables import dataset_seqs, label_history, watermarks
from tests.conftest import T0


def _history(prediction_id: str, label: object, sources: object, watermark: datetime | None) -> dict[str, object]:
    return {
        "prediction_id": prediction_id,
        "revision": 1,
        "seq": 1,
        "label": label,
        "kind": "explicit",
        "rule": "rating >= 4",
        "sources": sources,
        "status": "provisional",
        "feedback_delay_s": None,
        "recorded_at": T0,
        "watermark": watermark,
    }


async def test_rows_round_trip_with_json_nulls_and_offsets(engine: AsyncEngine) -> None:
    plus_two = timezone(timedelta(hours=2))
    rows = [
        _history("p1", {"stars": 5, "text": "ça va"}, [{"event_id": "e1"}], T0.astimezone(plus_two)),
        _history("p2", 0, [], None),
        _history("p3", "a 'quoted' \"label\"", [{"event_id": None}], T0),
    ]
    async with engine.begin() as conn:
        await insert_rows(conn, label_history, rows)
        stored = (await conn.execute(select(label_history).order_by(label_history.c.prediction_id))).all()
    assert [(r.prediction_id, r.label, r.sources, r.watermark) for r in stored] == [
        ("p1", {"stars": 5, "text": "ça va"}, [{"event_id": "e1"}], T0),
        ("p2", 0, [], None),
        ("p3", "a 'quoted' \"label\"", [{"event_id": None}], T0),
    ]
    assert all(r.recorded_at == T0 and r.feedback_delay_s is None for r in stored)


async def test_update_rows_changes_only_the_keyed_rows(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await insert_rows(conn, label_history, [_history(f"p{i}", i, [], None) for i in range(3)])
        ids = {r.prediction_id: r.id for r in await conn.execute(select(label_history))}
        await update_rows(
            conn,
            label_history,
            "id",
            [
                {"id": ids["p0"], "label": {"new": True}, "feedback_delay_s": 1.5, "watermark": T0},
                {"id": ids["p2"], "label": "two", "feedback_delay_s": None, "watermark": None},
            ],
        )
        stored = {r.prediction_id: r for r in await conn.execute(select(label_history))}
    assert (stored["p0"].label, stored["p0"].feedback_delay_s, stored["p0"].watermark) == ({"new": True}, 1.5, T0)
    assert (stored["p1"].label, stored["p1"].feedback_delay_s, stored["p1"].watermark) == (1, None, None)
    assert (stored["p2"].label, stored["p2"].watermark) == ("two", None)


async def test_naive_datetimes_are_refused(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        with pytest.raises((ValueError, StatementError), match="naive datetimes"):  # SQLAlchemy wraps it
            await insert_rows(conn, label_history, [_history("p1", 1, [], T0.replace(tzinfo=None))])


async def test_rows_of_a_single_column(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await insert_rows(conn, dataset_seqs, [{"use_case": "a"}, {"use_case": "b"}])
        stored = (await conn.execute(select(dataset_seqs).order_by(dataset_seqs.c.use_case))).all()
    assert [(r.use_case, r.last_seq) for r in stored] == [("a", 0), ("b", 0)]


async def test_upsert_rows_inserts_new_keys_and_replaces_the_rest_of_stored_ones(engine: AsyncEngine) -> None:
    def mark(name: str, newest: datetime | None, caught_up: bool) -> dict[str, object]:
        return {"name": name, "max_event_time": newest, "last_arrival_at": T0, "caught_up": caught_up} | {
            "reported_at": None
        }

    async with engine.begin() as conn:
        await upsert_rows(conn, watermarks, "name", [mark("a", T0, False)])
        later = T0.astimezone(timezone(timedelta(hours=-5))) + timedelta(seconds=1)
        await upsert_rows(conn, watermarks, "name", [mark("a", later, True), mark("b", None, False)])
        rows = {r.name: (r.max_event_time, r.caught_up) for r in await conn.execute(select(watermarks))}
    assert rows == {"a": (T0 + timedelta(seconds=1), True), "b": (None, False)}
