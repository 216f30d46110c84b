"""The worked timelines of shared/label-semantics.md, through the HTTP API, on SQLite and PostgreSQL.

Policy recsys: window 10 min, allowed lateness 1 h, revise; W = 12:10 and S = 13:10 for P at 12:00.
"""

from __future__ import annotations

from datetime import timedelta

import httpx

from service.api.runtime import Runtime
from tests.conftest import T0, FakeClock
from tests.helpers import MIN, Timeline

W = T0 + 10 * MIN
S = W + timedelta(hours=1)


async def test_positive_then_final(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("P", T0)
    await t.event("P", "click", T0 + timedelta(seconds=30), actor="user:42")
    label = await t.label("P")
    assert label is not None
    assert (label["label"], label["label_kind"], label["status"], label["revision"]) == (
        1,
        "behavioral",
        "provisional",
        0,
    )
    assert label["feedback_delay_s"] == 30
    assert label["sources"] == [{"event_id": "P-click-1", "type": "click", "actor": "user:42"}]
    provisional_seq = label["seq"]

    await t.advance_watermark(W)
    assert (await t.label("P"))["status"] == "provisional"  # type: ignore[index]
    await t.advance_watermark(S)
    final = await t.label("P")
    assert final is not None
    assert (final["label"], final["status"], final["revision"]) == (1, "final", 0)
    assert final["seq"] > provisional_seq  # a status change is a change the trainer must see


async def test_implicit_negative_after_window(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("P", T0)
    await t.advance_watermark(W - timedelta(seconds=1))
    assert await t.label("P") is None
    await t.advance_watermark(W)
    label = await t.label("P")
    assert label is not None
    assert (label["label"], label["label_kind"], label["status"]) == (0, "implicit_negative", "provisional")
    assert label["feedback_delay_s"] is None
    await t.advance_watermark(S)
    assert (await t.label("P"))["status"] == "final"  # type: ignore[index]


async def test_late_positive_revises_fake_negative(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("P", T0)
    await t.advance_watermark(T0 + 40 * MIN)
    negative = await t.label("P")
    assert negative is not None
    assert negative["label_kind"] == "implicit_negative"

    await t.event("P", "click", T0 + 12 * MIN)
    revised = await t.label("P")
    assert revised is not None
    assert (revised["label"], revised["label_kind"], revised["revision"]) == (1, "behavioral", 1)
    assert revised["seq"] > negative["seq"]
    history = (await t.lineage("P"))["history"]
    assert [(h["revision"], h["kind"]) for h in history] == [(0, "implicit_negative"), (1, "behavioral")]
    assert (await t.metrics())["revisions"] == 1


async def test_too_late_event_changes_nothing(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("P", T0)
    await t.advance_watermark(T0 + timedelta(hours=2))
    await t.event("P", "click", T0 + 3 * MIN)
    lineage = await t.lineage("P")
    assert (lineage["label"]["label"], lineage["label"]["status"]) == (0, "final")
    assert [(e["type"], e["disposition"]) for e in lineage["events"]] == [("click", "too_late")]
    assert (await t.metrics())["late_events"] == 1


async def test_event_after_seal_never_counts(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("P", T0)
    await t.event("P", "click", S + MIN)  # occurred after the seal, arrives before it is swept
    lineage = await t.lineage("P")
    assert lineage["events"][0]["disposition"] == "too_late"
    assert lineage["label"]["label"] == 0  # the click's own time moved the watermark past W and S


async def test_orphan_event_joins_when_prediction_arrives(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock)
    await t.event("P", "click", T0 + MIN)
    assert (await client.get("/v1/predictions/P")).status_code == 404
    await t.predict("P", T0)
    label = await t.label("P")
    assert label is not None
    assert (label["label"], label["label_kind"], label["feedback_delay_s"]) == (1, "behavioral", 60)


async def test_explicit_beats_behavioral(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("P", T0)
    await t.event("P", "click", T0 + MIN)
    await t.event("P", "rating", T0 + 2 * MIN, value=1, actor="user:42")
    lineage = await t.lineage("P")
    assert (lineage["label"]["label"], lineage["label"]["label_kind"]) == (0, "explicit")
    assert [e["type"] for e in lineage["events"]] == ["click", "rating"]
    assert lineage["label"]["sources"] == [{"event_id": "P-rating-2", "type": "rating", "actor": "user:42"}]


async def test_annotators_who_disagree_resolved_by_majority(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock, use_case="recsys_majority")
    await t.predict("P", T0)
    for minute, (stars, who) in enumerate([(5, "annotator:a"), (1, "annotator:b"), (4, "annotator:c")], start=1):
        await t.event("P", "rating", T0 + minute * MIN, value=stars, actor=who)
    lineage = await t.lineage("P")
    assert (lineage["label"]["label"], lineage["label"]["label_kind"]) == (1, "explicit")
    assert [s["actor"] for s in lineage["label"]["sources"]] == ["annotator:a", "annotator:c"]
    assert [e["actor"] for e in lineage["events"]] == ["annotator:a", "annotator:b", "annotator:c"]


async def test_return_outranks_purchase(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("P", T0)
    await t.event("P", "purchase", T0 + 5 * MIN)
    assert (await t.label("P"))["label"] == 1  # type: ignore[index]
    await t.event("P", "return", T0 + 40 * MIN)
    label = await t.label("P")
    assert label is not None
    assert (label["label"], label["label_kind"], label["revision"]) == (0, "behavioral", 1)
    assert label["rule"] == "events.return: negative, rank 3"


async def test_ignore_policy_seals_at_window_end(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock, use_case="recsys_ignore")
    await t.predict("P", T0)
    await t.advance_watermark(T0 + 20 * MIN)
    assert (await t.label("P"))["status"] == "final"  # type: ignore[index]
    await t.event("P", "click", T0 + 5 * MIN)
    lineage = await t.lineage("P")
    assert (lineage["label"]["label"], lineage["label"]["status"]) == (0, "final")
    assert lineage["events"][0]["disposition"] == "too_late"


async def test_regression_label_and_expiry(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock, use_case="eta")
    await t.predict("trip-1", T0, output={"eta_s": 1500})
    await t.predict("trip-2", T0)
    await t.event("trip-1", "trip_completed", T0 + timedelta(seconds=1712), value=1712)
    label = await t.label("trip-1")
    assert label is not None
    assert (label["label"], label["label_kind"], label["feedback_delay_s"]) == (1712, "natural", 1712)
    await t.advance_watermark(T0 + timedelta(hours=7))
    assert await t.label("trip-2") is None
    figures = await t.metrics()
    assert (figures["expired"], figures["labeled"], figures["served"], figures["pending"]) == (1, 1, 2, 0)
    assert (await t.label("trip-1"))["status"] == "final"  # type: ignore[index]


async def test_clock_skew_counts_with_zero_delay(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("P", T0)
    await t.event("P", "click", T0 - timedelta(seconds=10))
    label = await t.label("P")
    assert label is not None
    assert (label["label"], label["feedback_delay_s"]) == (1, 0)
    figures = await t.metrics()
    assert figures["clock_skew"] == 1
    assert figures["feedback_delay"]["click"]["max_s"] == 0


async def test_duplicates_change_nothing(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("P", T0)
    await t.event("P", "click", T0 + MIN, event_id="e-1")
    before = await t.lineage("P")
    again = await client.post(
        "/v1/events",
        json={"event_id": "e-1", "prediction_id": "P", "type": "click", "occurred_at": (T0 + MIN).isoformat()},
    )
    assert again.json() == {"accepted": 0, "duplicates": 1}
    prediction_again = await client.post(
        "/v1/predictions", json={"prediction_id": "P", "use_case": "recsys", "served_at": T0.isoformat()}
    )
    assert prediction_again.json() == {"accepted": 0, "duplicates": 1}
    assert await t.lineage("P") == before
    figures = await t.metrics()
    assert (figures["served"], figures["events"], figures["feedback_delay"]["click"]["count"]) == (1, {"click": 1}, 1)
