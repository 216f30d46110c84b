"""GET /v1/advice/window through the API on SQLite and PostgreSQL, on a workload with a known delay
distribution, recent cohorts censored: the advised window's true fake-negative rate is within the
interval it reports."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import httpx

from tests.conftest import T0, FakeClock
from tests.helpers import iso

MU, SIGMA = math.log(120.0), 1.0  # clicks: median two minutes
HOURS, PER_HOUR, CTR = 12, 60, 0.5


def cdf(x: float) -> float:
    return 0.5 * (1 + math.erf((math.log(x) - MU) / (SIGMA * math.sqrt(2))))


async def test_the_advised_window_carries_the_rate_it_reports(client: httpx.AsyncClient, clock: FakeClock) -> None:
    rng = random.Random(11)
    now = T0 + timedelta(hours=HOURS)
    predictions: list[dict[str, Any]] = []
    clicks: list[dict[str, Any]] = []
    for hour in range(HOURS):
        for i in range(PER_HOUR):
            served = T0 + timedelta(hours=hour, seconds=rng.uniform(0, 3599))
            pid = f"P{hour}-{i}"
            predictions.append({"prediction_id": pid, "use_case": "recsys", "served_at": iso(served)})
            delay = timedelta(seconds=rng.lognormvariate(MU, SIGMA))
            if rng.random() < CTR and served + delay <= now:  # later clicks have not happened yet
                clicks.append(
                    {"event_id": f"c-{pid}", "prediction_id": pid, "type": "click", "occurred_at": iso(served + delay)}
                )
    clock.set(now)
    assert (await client.post("/v1/predictions", json={"predictions": predictions})).status_code == 202
    assert (await client.post("/v1/events", json={"events": clicks})).status_code == 202

    response = await client.get("/v1/advice/window", params={"use_case": "recsys", "max_fake_negative_rate": 0.05})
    assert response.status_code == 200, response.text
    advice = response.json()
    click = advice["event_types"]["click"]
    advised = click["advised"]
    horizon = click["horizon_s"]
    truth = (cdf(horizon) - cdf(advised["window_s"])) / cdf(horizon)
    assert advised["interval"][0] <= truth <= advised["interval"][1]
    assert advised["fake_negative_rate"] <= 0.05
    assert advice["current_window_s"] == 600.0
    current = click["current"]
    assert current["window_s"] == 600.0
    assert current["interval"][0] <= (cdf(horizon) - cdf(600.0)) / cdf(horizon) <= current["interval"][1]
    assert click["sample"]["positives"] <= len(clicks)
    assert click["sample"]["cohorts"] == HOURS - 1  # the hour still under way is not a cohort yet
    assert advice["window_s"] == advised["window_s"]  # clicks are the only type seen
    assert advice["event_types"]["purchase"]["sample"]["positives"] == 0
    rates = [p["fake_negative_rate"] for p in click["curve"]]
    assert rates == sorted(rates, reverse=True)


async def test_unknown_use_case_and_event_type(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/v1/advice/window", params={"use_case": "nope"})
    assert (unknown.status_code, unknown.json()["detail"][0]["field"]) == (404, "query.use_case")
    wrong = await client.get("/v1/advice/window", params={"use_case": "recsys", "event_type": "return"})
    assert (wrong.status_code, wrong.json()["detail"][0]["field"]) == (422, "query.event_type")
