"""Feedback-loop figures and the Prometheus exposition."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.api.runtime import Runtime
from tests.conftest import T0, FakeClock
from tests.helpers import MIN, Timeline

HOUR = timedelta(hours=1)


async def test_feedback_delay_per_event_type(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    click_delays = list(range(1, 101))  # 1..100 seconds
    for i in range(len(click_delays)):
        await t.predict(f"P{i}", T0 + i * timedelta(seconds=1))
    for i, delay in sorted(enumerate(click_delays), key=lambda x: x[0] + x[1]):
        await t.event(f"P{i}", "click", T0 + i * timedelta(seconds=1) + delay * timedelta(seconds=1))
    await t.event("P0", "purchase", T0 + 30 * MIN)
    for i in range(100, 120):  # served, never clicked
        await t.predict(f"P{i}", T0 + 40 * MIN)

    figures = await t.metrics()
    clicks = figures["feedback_delay"]["click"]
    assert clicks["count"] == 100
    assert clicks["max_s"] == 100
    # Histogram quantiles are within one bucket (10%) of the exact ones.
    assert clicks["p50_s"] == pytest.approx(50, rel=0.1)
    assert clicks["p90_s"] == pytest.approx(90, rel=0.1)
    assert clicks["p99_s"] == pytest.approx(99, rel=0.1)
    assert figures["feedback_delay"]["purchase"]["max_s"] == 30 * 60
    assert figures["served"] == 120
    assert figures["labeled"] == 100
    assert figures["coverage"] == pytest.approx(100 / 120)
    assert figures["pending"] == 120
    assert figures["labels_by_kind"]["behavioral"] == 100

    await t.advance_watermark(T0 + 60 * MIN)
    figures = await t.metrics()
    assert figures["labels_by_kind"] == {"explicit": 0, "behavioral": 100, "natural": 0, "implicit_negative": 20}
    assert figures["coverage"] == 1
    await t.advance_watermark(T0 + 3 * timedelta(hours=1))
    assert (await t.metrics())["pending"] == 0


async def test_since_selects_predictions_served_from_that_hour(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("early", T0)
    await t.event("early", "click", T0 + MIN)
    await t.predict("later", T0 + timedelta(hours=2))
    response = await client.get(
        "/v1/metrics/feedback-loop", params={"use_case": "recsys", "since": (T0 + timedelta(hours=2)).isoformat()}
    )
    figures = response.json()["use_cases"]["recsys"]
    assert (figures["served"], figures["labeled"], figures["feedback_delay"]) == (1, 0, {})
    everything = await client.get("/v1/metrics/feedback-loop")
    assert set(everything.json()["use_cases"]) >= {"recsys", "eta", "fraud"}
    assert everything.json()["use_cases"]["recsys"]["served"] == 2
    assert (await client.get("/v1/metrics/feedback-loop", params={"use_case": "nope"})).status_code == 404


async def test_prometheus_exposition(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("P", T0)
    await t.predict("Q", T0)
    await t.event("P", "click", T0 + timedelta(seconds=42))
    await t.advance_watermark(T0 + 20 * MIN)
    response = await client.get("/metrics")
    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("labelloop_records_ingested_total", (("outcome", "accepted"), ("record", "predictions")))] == 2
    assert samples[("labelloop_labels_total", (("kind", "behavioral"), ("use_case", "recsys")))] == 1
    assert samples[("labelloop_labels_total", (("kind", "implicit_negative"), ("use_case", "recsys")))] == 1
    delay_key = ("labelloop_feedback_delay_seconds_count", (("event_type", "click"), ("use_case", "recsys")))
    assert samples[delay_key] == 1
    assert samples[("labelloop_pending_windows", (("use_case", "recsys"),))] == 2
    assert ("labelloop_watermark_lag_seconds", ()) in samples


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_delays_since_an_hour_add_its_partial_day_to_the_whole_days_after(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    """Delay histograms are read by day where whole days are asked for, by hour for the first,
    partial day of a `since`: every click is counted once, wherever `since` falls."""
    t = Timeline(client, runtime, clock)
    day = timedelta(days=1)
    midnight = T0.replace(hour=0)
    served = {  # prediction -> (served at, click delay in seconds)
        "day-before": (midnight - day + timedelta(hours=5), 1),
        "same-day-early": (midnight + timedelta(hours=3), 2),
        "same-day-late": (midnight + timedelta(hours=20), 4),
        "next-day": (midnight + day + timedelta(hours=1), 8),
        "days-later": (midnight + 3 * day + timedelta(hours=12), 16),
    }
    for pid, (at, delay) in served.items():
        await t.predict(pid, at)
        await t.event(pid, "click", at + timedelta(seconds=delay))

    async def click_delays(since: str | None) -> tuple[int, float]:
        params = {"use_case": "recsys"} | ({"since": since} if since else {})
        clicks = (await client.get("/v1/metrics/feedback-loop", params=params)).json()["use_cases"]["recsys"]
        figures = clicks["feedback_delay"]["click"]
        return figures["count"], figures["max_s"]

    assert await click_delays(None) == (5, 16)
    assert await click_delays((midnight + timedelta(hours=3)).isoformat()) == (4, 16)  # partial day + days
    assert await click_delays((midnight + timedelta(hours=4)).isoformat()) == (3, 16)
    assert await click_delays((midnight + day).isoformat()) == (2, 16)  # whole days only
    assert await click_delays((midnight + day + timedelta(hours=2)).isoformat()) == (1, 16)


async def test_until_trend_and_histograms_count_every_click_once(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    """`until` closes the served range (to the end of its hour); `trend=hour|day` adds each event
    type's histogram and the figures per served hour or day, which add up to the range's."""
    t = Timeline(client, runtime, clock)
    day = timedelta(days=1)
    midnight = T0.replace(hour=0)
    served = {  # prediction -> (served at, click delay in seconds)
        "before": (midnight - timedelta(hours=2), 1),
        "first-day": (midnight + timedelta(hours=13), 2),
        "first-day-too": (midnight + timedelta(hours=13, minutes=30), 3),
        "whole-day": (midnight + day + timedelta(hours=6), 40),
        "last-day": (midnight + 2 * day + timedelta(hours=1), 300),
        "after": (midnight + 2 * day + timedelta(hours=5), 7),
    }
    for pid, (at, delay) in served.items():
        await t.predict(pid, at, model="ranker", model_version="8" if pid == "whole-day" else "7")
        await t.event(pid, "click", at + timedelta(seconds=delay))

    since, until = midnight + timedelta(hours=12), midnight + 2 * day + timedelta(hours=1, minutes=10)
    base = {"use_case": "recsys", "since": since.isoformat(), "until": until.isoformat()}
    plain = (await client.get("/v1/metrics/feedback-loop", params=base)).json()["use_cases"]["recsys"]
    assert plain["served"] == 4  # first-day (2), whole-day, last-day (served 01:00, until's hour)
    assert plain["feedback_delay"]["click"]["count"] == 4
    assert plain["feedback_delay"]["click"]["max_s"] == 300
    assert "trend" not in plain
    assert "histogram" not in plain["feedback_delay"]["click"]

    for granularity, periods in (("hour", 3), ("day", 3)):
        response = await client.get("/v1/metrics/feedback-loop", params={**base, "trend": granularity})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["trend_granularity"] == granularity
        assert answer["served_hours"] == {"from": since.isoformat(), "to": (until.replace(minute=0) + HOUR).isoformat()}
        detailed = answer["use_cases"]["recsys"]
        histogram = detailed["feedback_delay"]["click"].pop("histogram")
        assert {k: v for k, v in detailed.items() if k != "trend"} == plain
        assert sum(b["count"] for b in histogram) == 4
        assert [b["le_s"] for b in histogram] == sorted(b["le_s"] for b in histogram)
        trend = detailed["trend"]
        assert len(trend) == periods
        assert sum(p["served"] for p in trend) == 4
        assert sum(p["feedback_delay"]["click"]["count"] for p in trend) == 4
        assert max(p["feedback_delay"]["click"]["max_s"] for p in trend) == 300
    hourly = (await client.get("/v1/metrics/feedback-loop", params={**base, "trend": "hour"})).json()
    assert [p["start"] for p in hourly["use_cases"]["recsys"]["trend"]] == [
        (midnight + timedelta(hours=13)).isoformat(),
        (midnight + day + timedelta(hours=6)).isoformat(),
        (midnight + 2 * day + timedelta(hours=1)).isoformat(),
    ]
    assert [p["served"] for p in hourly["use_cases"]["recsys"]["trend"]] == [2, 1, 1]

    unbounded = await client.get("/v1/metrics/feedback-loop", params={"use_case": "recsys", "trend": "hour"})
    assert unbounded.status_code == 422
    assert unbounded.json()["detail"][0]["field"] == "query.trend"
    everything = (await client.get("/v1/metrics/feedback-loop", params={"trend": "day"})).json()
    assert sum(p["served"] for p in everything["use_cases"]["recsys"]["trend"]) == 6
    backwards = await client.get(
        "/v1/metrics/feedback-loop", params={**base, "since": until.isoformat(), "until": since.isoformat()}
    )
    assert backwards.status_code == 422

    models = (await client.get("/v1/metrics/models", params=base)).json()["use_cases"]["recsys"]
    assert [(m["model"], m["model_version"], m["served"]) for m in models] == [("ranker", "7", 3), ("ranker", "8", 1)]
    assert sum(m["labels_by_kind"]["behavioral"] for m in models) == plain["labels_by_kind"]["behavioral"]
    only = (await client.get("/v1/metrics/models", params={**base, "model_version": "8"})).json()["use_cases"]
    assert [m["served"] for m in only["recsys"]] == [1]
    assert (await client.get("/v1/metrics/models", params={"use_case": "nope"})).status_code == 404

    pipeline = (await client.get("/v1/metrics/pipeline")).json()
    assert pipeline["mode"] == "embedded"
    assert pipeline["max_event_time"] == (served["after"][0] + timedelta(seconds=7)).isoformat()
    assert pipeline["watermark_lag_s"] is not None
    assert (pipeline["dead_letters"], pipeline["recent_dead_letters"]) == (0, [])
