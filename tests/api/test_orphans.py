"""Events that arrive before their prediction wait for it, up to the orphan TTL."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import event

from service.api.runtime import Runtime
from tests.conftest import T0, FakeClock
from tests.helpers import MIN, Timeline


async def test_expired_orphan_is_counted_and_never_joined(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock)
    await t.event("P", "click", T0 + MIN)
    clock.advance(runtime.settings.orphan_ttl - timedelta(seconds=1))
    await runtime.tick()
    body = (await client.get("/v1/metrics/feedback-loop")).json()
    assert body["orphans_expired"] == 0

    clock.advance(timedelta(seconds=2))
    await runtime.tick()
    body = (await client.get("/v1/metrics/feedback-loop")).json()
    assert body["orphans_expired"] == 1

    await t.predict("P", T0)
    await t.advance_watermark(T0 + 20 * MIN)
    lineage = await t.lineage("P")
    assert [e["disposition"] for e in lineage["events"]] == ["expired_orphan"]
    assert lineage["label"]["label_kind"] == "implicit_negative"


async def test_orphan_of_another_use_case_is_kept_then_marked_invalid(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock)
    # trip_completed is an eta event: acceptable while the prediction is unknown.
    await t.event("P", "trip_completed", T0 + MIN, value=60)
    await t.predict("P", T0)  # ... but P turns out to be a recsys prediction
    lineage = await t.lineage("P")
    assert lineage["events"][0]["disposition"] == "invalid"
    assert "unknown event type 'trip_completed' for use case 'recsys'" in lineage["events"][0]["reason"]
    assert lineage["label"] is None
    assert (await t.metrics())["invalid_events"] == 1


async def test_several_orphans_join_at_once(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    await t.event("P", "click", T0 + MIN)
    await t.event("P", "rating", T0 + 2 * MIN, value=2, actor="user:1")
    await t.predict("P", T0)
    lineage = await t.lineage("P")
    assert [e["disposition"] for e in lineage["events"]] == ["counted", "counted"]
    assert (lineage["label"]["label"], lineage["label"]["label_kind"]) == (0, "explicit")
    assert len(lineage["history"]) == 1  # joined in one step: one revision


async def test_once_a_tick_found_no_orphan_predictions_skip_the_lookup_until_one_is_stored(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, sql: str, *_: object) -> None:
        statements.append(sql)

    t = Timeline(client, runtime, clock)
    await runtime.tick()
    assert runtime.state.orphans_absent
    event.listen(runtime.db.writer.sync_engine, "before_cursor_execute", seen)
    try:
        await t.predict("A", T0)
        assert not [s for s in statements if "FROM events" in s]  # nothing could be waiting for A

        await t.event("P", "click", T0 + MIN)  # before its prediction: an orphan
        assert not runtime.state.orphans_absent
        await t.predict("P", T0)
    finally:
        event.remove(runtime.db.writer.sync_engine, "before_cursor_execute", seen)
    lineage = await t.lineage("P")
    assert [e["disposition"] for e in lineage["events"]] == ["counted"]
    assert lineage["label"]["label"] == 1
    await runtime.tick()
    assert runtime.state.orphans_absent  # joined: none left waiting
