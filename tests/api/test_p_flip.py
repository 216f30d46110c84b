"""p_flip through the API on SQLite and PostgreSQL: on a seeded stream with log-normal click delays,
the mean p_flip of the provisional implicit negatives read at one moment matches the share of them
that a click later turns into 1, within three standard errors."""

from __future__ import annotations

import csv
import io
import math
import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from service.api.runtime import Runtime
from tests.conftest import T0, FakeClock
from tests.helpers import MIN, Timeline, iso

CTR, MU, SIGMA = 0.6, math.log(480.0), 1.0  # clicks: median 8 min, so two in five come after the 10-min window
HISTORY_HOURS, PER_HOUR = 12, 1000  # the curve's cohorts, all watched past the seal by the read
COHORT_FROM, COHORT_FOR, COHORT = T0 + timedelta(hours=13), timedelta(minutes=30), 4000
READ_AT = COHORT_FROM + timedelta(minutes=45)  # the cohort has waited 15 to 45 min
END = READ_AT + timedelta(hours=2)  # every seal passed
SLOT = timedelta(minutes=5)


def cdf(x: float) -> float:
    return 0.5 * (1 + math.erf((math.log(x) - MU) / (SIGMA * math.sqrt(2))))


def served_and_clicked(rng: random.Random, pid: str, served: datetime) -> tuple[dict[str, Any], dict[str, Any] | None]:
    prediction = {"prediction_id": pid, "use_case": "recsys", "served_at": iso(served)}
    if rng.random() >= CTR:
        return prediction, None
    occurred = served + timedelta(seconds=rng.lognormvariate(MU, SIGMA))
    return prediction, {"event_id": f"c-{pid}", "prediction_id": pid, "type": "click", "occurred_at": iso(occurred)}


def workload(rng: random.Random) -> list[tuple[datetime, str, dict[str, Any]]]:
    records: list[tuple[datetime, str, dict[str, Any]]] = []
    served = [T0 + timedelta(seconds=rng.uniform(0, HISTORY_HOURS * 3600)) for _ in range(HISTORY_HOURS * PER_HOUR)]
    served += [COHORT_FROM + rng.uniform(0, 1) * COHORT_FOR for _ in range(COHORT)]
    for i, at in enumerate(served):
        prediction, click = served_and_clicked(rng, f"P{i}", at)
        records.append((at, "predictions", prediction))
        if click is not None:
            records.append((datetime.fromisoformat(click["occurred_at"]), "events", click))
    return sorted(records, key=lambda r: r[0])


async def deliver(
    client: httpx.AsyncClient, clock: FakeClock, records: list[tuple[datetime, str, dict[str, Any]]], until: datetime
) -> list[tuple[datetime, str, dict[str, Any]]]:
    """Live, a slot of event time at a time: each slot's records arrive at its end. The rest back."""
    slots: dict[datetime, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    rest = []
    for at, kind, record in records:
        if at > until:
            rest.append((at, kind, record))
        else:
            slots[T0 + ((at - T0) // SLOT + 1) * SLOT][kind].append(record)
    for end, kinds in sorted(slots.items()):
        clock.set(min(end, until))
        for kind in ("predictions", "events"):
            if kinds[kind]:
                response = await client.post(f"/v1/{kind}", json={kind: kinds[kind]})
                assert response.status_code == 202, response.text
    return rest


async def dataset(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/v1/datasets/recsys")
    assert response.status_code == 200, response.text
    return {row["prediction_id"]: row for row in map(orjson.loads, response.text.splitlines())}


async def test_mean_p_flip_of_a_cohort_is_the_share_that_flips(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    records = workload(random.Random(7))
    later = await deliver(client, clock, records, READ_AT)
    clock.set(READ_AT + runtime.settings.idle_timeout)
    await runtime.tick()  # the stream idle: the watermark follows the clock to READ_AT
    then = await dataset(client)
    waiting = {
        pid: row
        for pid, row in then.items()
        if row["label_kind"] == "implicit_negative" and row["status"] == "provisional"
    }
    assert all(row["served_at"] >= iso(COHORT_FROM) for row in waiting.values())  # the history is final
    assert {row["p_flip"] for row in then.values() if row["status"] == "final"} == {0}
    assert {row["p_flip"] for row in then.values() if row["label_kind"] == "behavioral"} <= {0, None}

    await deliver(client, clock, later, END)
    clock.set(END + runtime.settings.idle_timeout)
    await runtime.tick()
    now = await dataset(client)
    assert all(now[pid]["status"] == "final" and now[pid]["p_flip"] == 0 for pid in waiting)

    n = len(waiting)
    mean_p_flip = sum(row["p_flip"] for row in waiting.values()) / n
    flipped = sum(now[pid]["label"] == 1 for pid in waiting) / n
    # Two independent errors: the cohort's flips are Bernoulli draws around the true p_flip, and the
    # curve is estimated from the history, whose predictions without a click by then (at least
    # 1 - CTR of them) show the same flip share.
    bernoulli = sum(row["p_flip"] * (1 - row["p_flip"]) for row in waiting.values()) / n**2
    curve = mean_p_flip * (1 - mean_p_flip) / (HISTORY_HOURS * PER_HOUR * (1 - CTR))
    tolerance = 3 * math.sqrt(bernoulli + curve)
    assert n > 1500
    assert 0.05 < mean_p_flip < 0.3  # a cohort where flips are common enough to test
    assert abs(mean_p_flip - flipped) <= tolerance, (mean_p_flip, flipped, tolerance)
    # The test has the power to see the conditioning on "no click yet": without it, the truth
    # itself, CTR * (F(seal) - F(waited)), would be off by more than the tolerance.
    seal_s = (runtime.policies.use_cases["recsys"].window + timedelta(hours=1)).total_seconds()
    waited = [(READ_AT - datetime.fromisoformat(row["served_at"])).total_seconds() for row in waiting.values()]
    unconditioned = sum(CTR * (cdf(seal_s) - cdf(w)) for w in waited) / n
    assert abs(unconditioned - flipped) > tolerance

    # Sure-er the longer one has waited: the longer-waiting half carries the lower mean.
    ordered = sorted(waiting.values(), key=lambda r: r["served_at"])
    longer, shorter = ordered[: n // 2], ordered[n // 2 :]
    assert sum(r["p_flip"] for r in longer) < sum(r["p_flip"] for r in shorter)


async def test_as_of_a_seq_the_rows_are_as_sure_as_they_were_then(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    """No history yet: not estimated. Then, with history: p_flip falls as a row waits, and a dataset
    as of a seq keeps the wait it had at that seq."""
    clock.set(T0 - timedelta(hours=5))
    t = Timeline(client, runtime, clock)
    await t.predict("young", T0 - timedelta(hours=4))
    await t.advance_watermark(T0 - timedelta(hours=4) + 15 * MIN)
    assert (await dataset(client))["young"]["p_flip"] is None  # no cohort watched until a seal yet

    rng = random.Random(3)
    history = [served_and_clicked(rng, f"H{i}", T0 - timedelta(hours=3, seconds=i)) for i in range(300)]
    records = [(datetime.fromisoformat(p["served_at"]), "predictions", p) for p, _ in history]
    records += [(datetime.fromisoformat(c["occurred_at"]), "events", c) for _, c in history if c is not None]
    await deliver(client, clock, sorted(records, key=lambda r: r[0]), T0)
    t = Timeline(client, runtime, clock)
    await t.predict("P", T0)
    await t.advance_watermark(T0 + 15 * MIN)
    response = await client.get("/v1/datasets/recsys")
    seq = int(response.headers["X-Labelloop-Seq"])
    then = (await dataset(client))["P"]["p_flip"]
    assert 0 < then < 1
    table = (await client.get("/v1/datasets/recsys", params={"format": "csv"})).text
    assert {r["prediction_id"]: r["p_flip"] for r in csv.DictReader(io.StringIO(table))}["P"] == repr(then)

    await t.advance_watermark(T0 + 40 * MIN)
    clock.advance(runtime.settings.flip_refresh)  # the curve recomputed: the same history, the same curve
    assert 0 <= (await dataset(client))["P"]["p_flip"] < then
    as_of = await client.get("/v1/datasets/recsys", params={"as_of": seq})
    assert {r["prediction_id"]: r["p_flip"] for r in map(orjson.loads, as_of.text.splitlines())}["P"] == then
