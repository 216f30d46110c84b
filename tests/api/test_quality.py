"""GET /v1/metrics/quality against scikit-learn's metrics on the dataset's own rows: labels revised,
made final, two model versions, hourly and daily buckets, whatever the writer's state holds."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, mean_absolute_error, roc_auc_score, root_mean_squared_error
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.runtime import QUALITY_GAUGE_HOURS, Runtime
from service.store.stats import served_hour
from tests.api.test_writer_state import labelloop
from tests.conftest import T0, FakeClock, _truncate
from tests.helpers import MIN, Timeline, iso

HOUR = timedelta(hours=1)


def workload(seed: int = 5, n: int = 120) -> list[tuple[Any, str, dict[str, Any]]]:
    """(arrival, path, body): ranker 7 and 8 predictions a minute apart over two served hours; their
    events clicks, purchases, returns and ratings from seconds to past the seal, so labels are
    revised (a late click after an implicit negative, a return after a purchase) and sealed."""
    rng = random.Random(seed)
    sends: list[tuple[Any, str, dict[str, Any]]] = []
    for i in range(n):
        served = T0 + i * MIN
        version = rng.choice(["7", "8"])
        # Off the calibration bin edges, which scikit-learn closes on the right and labelloop on the left.
        score = min(round(rng.betavariate(2, 2 if version == "7" else 3), 4), 0.9998) + 0.00005
        body = {
            "prediction_id": f"P{i}",
            "use_case": "recsys",
            "model": "ranker",
            "model_version": version,
            "served_at": iso(served),
            "output": {"item": f"sku-{i}", "score": score},
        }
        sends.append((served, "/v1/predictions", body))
        for k in range(rng.choice([0, 1, 1, 2]) if rng.random() < score + 0.2 else 0):
            kind = rng.choice(["click", "click", "purchase", "return", "rating"])
            at = served + timedelta(seconds=rng.choice([5, 60, 300, 900, 3000, 9000]))
            event: dict[str, Any] = {"event_id": f"E{i}-{k}", "prediction_id": f"P{i}", "type": kind}
            if kind == "rating":
                event["value"] = rng.randint(1, 5)
            sends.append((at, "/v1/events", {**event, "occurred_at": iso(at)}))
    return sorted(sends, key=lambda s: (s[0], s[1], orjson.dumps(s[2])))


async def replay(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock, until: Any) -> None:
    """The workload's records arriving up to `until`, the ticker every minute."""
    next_tick = T0
    for at, path, body in workload():
        if at > until:
            break
        while next_tick <= at:
            clock.set(next_tick)
            await runtime.tick()
            next_tick += MIN
        clock.set(at)
        assert (await client.post(path, json=body)).status_code == 202
    clock.set(until)
    await runtime.tick()


def expected(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """scikit-learn's figures over these dataset rows."""
    y = [row["label"] for row in rows]
    p = [row["output"]["score"] for row in rows]
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10)
    return {
        "count": len(rows),
        "positive_rate": sum(y) / len(y),
        "mean_score": sum(p) / len(p),
        "log_loss": log_loss(y, p, labels=[0, 1]),
        "brier": brier_score_loss(y, p, labels=[0, 1]),
        "roc_auc": roc_auc_score(y, p) if 0 < sum(y) < len(y) else None,
        "calibration": (list(prob_true), list(prob_pred)),
    }


def assert_matches(figures: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    if not rows:
        assert figures == {"count": 0}
        return
    want = expected(rows)
    assert figures["count"] == want["count"]
    for name in ("positive_rate", "mean_score", "log_loss", "brier"):
        assert figures[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name
    if want["roc_auc"] is None:
        assert figures["roc_auc"] is None
    else:
        # Binned: within the bound the answer states (pairs in one bin count as ties).
        assert abs(figures["roc_auc"] - want["roc_auc"]) <= figures["roc_auc_max_error"] + 1e-12
        assert figures["roc_auc_max_error"] < 0.02
    table = figures["calibration"]
    assert [c["positive_rate"] for c in table] == pytest.approx(want["calibration"][0])
    assert [c["mean_score"] for c in table] == pytest.approx(want["calibration"][1])


async def dataset(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    body = (await client.get("/v1/datasets/recsys")).text
    return [orjson.loads(line) for line in body.splitlines()]


async def check_buckets(client: httpx.AsyncClient, bucket: str, by: str = "model_version") -> int:
    """Every bucket the endpoint answers against the dataset rows of its model, version, period and
    status; the number of (bucket, status) figures compared with some rows."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    hours = 1 if bucket == "1h" else 24
    for row in await dataset(client):
        hour = served_hour(T0.fromisoformat(row["served_at"]))
        version = row["model_version"] if by == "model_version" else None
        groups[(row["model"], version, hour // hours, row["status"])].append(row)
    response = await client.get("/v1/metrics/quality", params={"use_case": "recsys", "bucket": bucket, "by": by})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["task"], answer["score"], answer["bucket"], answer["by"]) == ("binary", "output.score", bucket, by)
    compared = 0
    seen = set()
    for model in answer["models"]:
        assert ("model_version" in model) == (by == "model_version")
        for entry in model["buckets"]:
            period = served_hour(T0.fromisoformat(entry["start"])) // hours
            for status in ("final", "provisional"):
                key = (model["model"], model.get("model_version"), period, status)
                seen.add(key)
                assert_matches(entry[status], groups.get(key, []))
                compared += bool(groups.get(key))
    assert {k for k, rows in groups.items() if rows} <= seen  # no labeled group left out
    return compared


@pytest.mark.parametrize("capacity", [100_000, 0])
async def test_quality_matches_scikit_learn_as_labels_change(
    engine: AsyncEngine, migrated_url: str, policies_file: Any, capacity: int
) -> None:
    await _truncate(engine)
    clock = FakeClock(T0)
    async with labelloop(migrated_url, policies_file, clock, capacity) as (client, runtime):
        # Midway: the first hour's windows closed, revisions still possible, nothing of hour two final.
        await replay(client, runtime, clock, T0 + 100 * MIN)
        rows = await dataset(client)
        assert {"final", "provisional"} == {row["status"] for row in rows}
        assert await check_buckets(client, "1h") >= 6
        await replay(client, runtime, clock, T0 + 6 * HOUR)
        rows = await dataset(client)
        assert {row["status"] for row in rows} == {"final"}
        assert len(rows) == 120
        assert any(row["revision"] for row in rows)  # labels did change on the way
        assert await check_buckets(client, "1h") == 4  # two hours, two versions
        assert await check_buckets(client, "1d") == 2
        assert await check_buckets(client, "1d", by="model") == 1


async def test_regression_quality_and_validation(client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock) -> None:
    t = Timeline(client, runtime, clock, use_case="eta")
    trips = [(1500.0, 1712), (900.0, 840), (2400.0, 2405), (600.0, None)]  # the last one never completes
    for i, (eta_s, _) in enumerate(trips):
        await t.predict(f"trip-{i}", T0, model="eta-gbm", model_version="2", output={"eta_s": eta_s})
    for i, (_, actual) in enumerate(trips):
        if actual is not None:
            await t.event(f"trip-{i}", "trip_completed", T0 + timedelta(seconds=actual), value=actual)
    response = await client.get("/v1/metrics/quality", params={"use_case": "eta", "bucket": "1h"})
    assert response.status_code == 200, response.text
    (model,) = response.json()["models"]
    assert (model["model"], model["model_version"]) == ("eta-gbm", "2")
    (entry,) = model["buckets"]
    figures = entry["provisional"]
    estimates, labels = [e for e, a in trips if a is not None], [a for _, a in trips if a is not None]
    assert figures["count"] == 3
    assert figures["mae"] == pytest.approx(mean_absolute_error(labels, estimates))
    assert figures["rmse"] == pytest.approx(root_mean_squared_error(labels, estimates))
    assert figures["bias"] == pytest.approx(sum(e - a for e, a in zip(estimates, labels, strict=True)) / 3)
    assert entry["final"] == {"count": 0}

    refused = await client.post(
        "/v1/predictions", json={"prediction_id": "x", "use_case": "eta", "output": {"eta_s": "soon"}}
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"] == "output.eta_s"
    refused = await client.post(
        "/v1/predictions", json={"prediction_id": "y", "use_case": "recsys", "output": {"score": 1.5}}
    )
    assert refused.status_code == 422
    assert "from 0 to 1" in refused.json()["detail"][0]["msg"]
    for params, status, field in (
        ({"use_case": "nope"}, 404, "query.use_case"),
        ({"use_case": "eta", "bucket": "1w"}, 422, "query.bucket"),
        ({"use_case": "eta", "since": iso(T0), "until": iso(T0 - HOUR)}, 422, "query.until"),
        ({"use_case": "eta", "bucket": "1h", "since": iso(T0 - 30 * 24 * HOUR)}, 422, "query.since"),
    ):
        response = await client.get("/v1/metrics/quality", params=params)
        assert response.status_code == status, (params, response.text)
        assert response.json()["detail"][0]["field"] == field


async def test_prometheus_gauges_of_the_latest_hour(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock)
    for i, score in enumerate([0.9, 0.2, 0.7]):
        served = T0 + (i // 2) * HOUR  # two in the first hour, one in the second
        await t.predict(f"P{i}", served, model="ranker", model_version="7", output={"score": score})
    await t.event("P0", "click", T0 + MIN)
    await t.event("P2", "click", T0 + HOUR + MIN)
    samples = {
        (s.name, s.labels.get("status"), s.labels.get("metric")): s.value
        for family in text_string_to_metric_families((await client.get("/metrics")).text)
        for s in family.samples
        if s.name.startswith("labelloop_model_quality")
    }
    # The first hour's P1 is an implicit negative by now; the latest hour holds P2 alone.
    assert samples[("labelloop_model_quality", "provisional", "count")] == 1
    assert samples[("labelloop_model_quality", "provisional", "mean_score")] == pytest.approx(0.7)
    assert samples[("labelloop_model_quality_hour_start_seconds", "provisional", None)] == (T0 + HOUR).timestamp()
    assert ("labelloop_model_quality", "final", "count") not in samples

    clock.advance(QUALITY_GAUGE_HOURS + 2 * HOUR)  # a version that served nothing for a week: retired
    text = (await client.get("/metrics")).text
    assert not [s for f in text_string_to_metric_families(text) for s in f.samples if "model_quality" in s.name]


async def test_an_estimate_too_large_to_square_is_not_scored_and_stops_nothing(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock, use_case="eta")
    await t.predict("huge", T0, model="eta-gbm", model_version="2", output={"eta_s": 1e200})
    await t.predict("fine", T0, model="eta-gbm", model_version="2", output={"eta_s": 100.0})
    for pid in ("huge", "fine"):
        await t.event(pid, "trip_completed", T0 + timedelta(seconds=120), value=120)
    await t.advance_watermark(T0 + 3 * 24 * HOUR)  # past both seals: each label changes status
    assert (await t.lineage("huge"))["label"]["status"] == "final"
    # Writing goes on: the squared error (1e400) would have stored inf, then inf - inf = NaN.
    assert (await t.predict("after", T0 + 3 * 24 * HOUR, output={"eta_s": 5.0})).status_code == 202
    response = await client.get("/v1/metrics/quality", params={"use_case": "eta", "bucket": "1h", "since": iso(T0)})
    (model,) = response.json()["models"]
    (entry,) = [b for b in model["buckets"] if b["final"]["count"]]
    assert entry["final"]["count"] == 1  # `fine` alone
    assert entry["final"]["mae"] == pytest.approx(20.0)
