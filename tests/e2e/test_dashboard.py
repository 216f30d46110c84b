"""The operators' dashboard in headless Chromium against a real `labelloop serve` (keys required):
the page asks for the key, then every figure it shows equals the JSON API's for the same filters,
and changing the use case, the time range or the model changes them; the window advice panel draws
GET /v1/advice/window's curves and advised window for the target typed. A screenshot of the page is
kept (under $LABELLOOP_TEST_ARTIFACTS if set, else the test's tmp_path) and its path printed.

Chromium missing is a failure, not a skip: .ci/run installs Debian's `chromium`."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from tests.e2e._chromium import Page, chromium
from tests.e2e._process import clean_env, labelloop_command, serve

pytestmark = pytest.mark.browser

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
RECSYS_MODELS = [("ranker", "7"), ("ranker", "8"), ("cold-start", "1")]
UNITS = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}


def workload(base: datetime) -> list[tuple[datetime, str, dict[str, Any]]]:
    """(event time, route, record). recsys: 80 predictions 3 min apart over 4 served hours (from
    base), each tenth of them clicked in the window (six), clicked and bought, clicked after the
    window (a revision of its implicit negative), clicked after the seal (too late), or never.
    eta: 20 trips from base + 2 h, completed 15-35 min later (natural labels, windows still open)."""
    records: list[tuple[datetime, str, dict[str, Any]]] = []

    def predict(pid: str, use_case: str, at: datetime, model: tuple[str, str]) -> None:
        body = {"prediction_id": pid, "use_case": use_case, "model": model[0], "model_version": model[1]}
        records.append((at, "predictions", {**body, "served_at": at.isoformat()}))

    def event(pid: str, kind: str, at: datetime, value: Any = None) -> None:
        body = {"event_id": f"{pid}-{kind}-{len(records)}", "prediction_id": pid, "type": kind}
        records.append((at, "events", {**body, "occurred_at": at.isoformat(), "value": value}))

    for i in range(80):
        pid, served = f"rec-{i}", base + i * 3 * MIN
        predict(pid, "recsys", served, RECSYS_MODELS[i % 3])
        match i % 10:
            case 0 | 1 | 2 | 3 | 4 | 5:
                event(pid, "click", served + timedelta(seconds=3 + (i * 37) % 590))
            case 6:
                event(pid, "click", served + timedelta(seconds=30))
                event(pid, "purchase", served + 4 * MIN)
            case 7:
                event(pid, "click", served + 25 * MIN)  # after the 10 min window, inside the 1 h lateness
            case 8:
                event(pid, "click", served + 80 * MIN)  # after the seal: too late
    for j in range(20):
        pid, served = f"trip-{j}", base + 2 * HOUR + j * 9 * MIN
        predict(pid, "eta", served, ("eta-gbm", "3"))
        event(pid, "trip_completed", served + (15 + j) * MIN, value=(15 + j) * 60)
    return sorted(records, key=lambda r: r[0])


def post_in_event_time_order(http: httpx.Client, records: list[tuple[datetime, str, dict[str, Any]]]) -> None:
    """Consecutive records of one kind in one request, in event-time order, as apps would log them."""
    batch: list[dict[str, Any]] = []
    route = ""
    for _, kind, body in [*records, (datetime.max.replace(tzinfo=UTC), "", {})]:
        if kind != route and batch:
            response = http.post(f"/v1/{route}", json={route: batch})
            assert response.status_code == 202, response.text
            batch = []
        route = kind
        batch.append(body)


def figures_on(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate(
        """[...document.querySelectorAll('[data-figure]')].map(e => ({name: e.dataset.figure,
            scope: e.dataset.scope, value: JSON.parse(e.dataset.value), text: e.textContent}))"""
    )
    return found


def shown_number(text: str) -> float:
    """What a figure's text says, back as a number: counts, percentages and delays with a unit."""
    if text.endswith(" %"):
        return float(text[:-2]) / 100
    number, _, unit = text.partition(" ")
    return float(number.replace(",", "")) * UNITS.get(unit, 1)


def assert_shows(item: dict[str, Any], expected: Any) -> None:
    """The figure holds the API's value, and its text says it (to the 3 digits shown)."""
    assert item["value"] == expected, item
    if expected is None:
        assert item["text"] == "\u2013", item  # an en dash
    elif isinstance(expected, int):
        assert item["text"] == f"{expected:,}", item
    else:
        assert shown_number(item["text"]) == pytest.approx(expected, rel=0.006, abs=0.0006), item


def check_against_api(page: Page, http: httpx.Client) -> dict[str, Any]:
    """Every figure the page shows for its use case and range equals GET /v1/metrics/feedback-loop."""
    query = dict(parse_qsl(page.evaluate("document.body.dataset.query")))
    use_case = query["use_case"]
    plain = {k: v for k, v in query.items() if k != "trend"}
    api = http.get("/v1/metrics/feedback-loop", params=plain)
    assert api.status_code == 200, api.text
    expected = api.json()["use_cases"][use_case]
    detailed = http.get("/v1/metrics/feedback-loop", params=query).json()["use_cases"][use_case]
    # The page's extra detail is the same figures plus histograms and trend.
    histograms = {t: d.pop("histogram") for t, d in detailed["feedback_delay"].items()}
    assert {k: v for k, v in detailed.items() if k != "trend"} == expected
    pipeline = http.get("/v1/metrics/pipeline").json()

    shown = figures_on(page)
    by_scope: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for item in shown:
        by_scope[item["scope"]].setdefault(item["name"], item)
    summary = by_scope["summary"]
    for name in ("served", "labeled", "coverage", "pending", "revisions", "late_events", "expired", "clock_skew"):
        assert_shows(summary[name], expected[name])
    for kind, count in expected["labels_by_kind"].items():
        assert_shows(summary[f"labels_by_kind.{kind}"], count)
    assert_shows(summary["dead_letters"], pipeline["dead_letters"])
    delays = by_scope["delay"]
    shown_types = {name.split(".")[1] for name in delays}
    assert shown_types == set(expected["feedback_delay"])
    for event_type, d in expected["feedback_delay"].items():
        for field in ("count", "p50_s", "p90_s", "p99_s", "max_s"):
            assert_shows(delays[f"feedback_delay.{event_type}.{field}"], d[field])
        chart = f"article.delay[data-event-type={event_type!r}] rect.bar"
        assert page.evaluate(f"document.querySelectorAll({chart!r}).length") == len(histograms[event_type])
    periods = page.evaluate("document.querySelectorAll('article.trend').length")
    assert periods == len(expected["feedback_delay"]) + 2  # a quantile chart per event type, counts, coverage
    assert by_scope["pipeline"]["mode"]["value"] == "embedded"
    return expected


def check_advice(page: Page, http: httpx.Client) -> dict[str, Any]:
    """The advice panel shows GET /v1/advice/window's answer for the page's use case and target:
    the current and advised windows, per event type with events a chart of every curve point with
    both windows marked, and the figures beside it."""
    use_case = dict(parse_qsl(page.evaluate("document.body.dataset.query")))["use_case"]
    target = page.evaluate("document.getElementById('advice-target').value")
    api = http.get("/v1/advice/window", params={"use_case": use_case, "max_fake_negative_rate": target})
    assert api.status_code == 200, api.text
    advice: dict[str, Any] = api.json()
    shown = {i["name"]: i for i in figures_on(page) if i["scope"] == "advice"}
    assert_shows(shown["advice.current_window_s"], advice["current_window_s"])
    assert_shows(shown["advice.window_s"], advice["window_s"])
    seen = {t: a for t, a in advice["event_types"].items() if a["sample"]["positives"]}
    drawn = page.evaluate("[...document.querySelectorAll('article.advice')].map(e => e.dataset.eventType)")
    assert drawn == sorted(seen)
    for event_type, a in seen.items():
        current, advised = a["current"], a["advised"]
        assert_shows(shown[f"advice.{event_type}.positives"], a["sample"]["positives"])
        assert_shows(shown[f"advice.{event_type}.horizon_s"], a["horizon_s"])
        assert_shows(shown[f"advice.{event_type}.advised_s"], advised and advised["window_s"])
        assert_shows(shown[f"advice.{event_type}.current_rate"], current and current["fake_negative_rate"])
        chart = f"article.advice[data-event-type={event_type!r}]"
        assert page.evaluate(f"document.querySelectorAll({chart + ' circle.dot'!r}).length") == len(a["curve"])
        marks = page.evaluate(
            f"""Object.fromEntries([...document.querySelectorAll({chart + " line.mark[data-window-s]"!r})]
                .map(e => [e.classList[1], Number(e.dataset.windowS)]))"""
        )
        expected = {"mark-current": current and current["window_s"], "mark-advised": advised and advised["window_s"]}
        assert marks == {k: v for k, v in expected.items() if v is not None}
    return advice


def rerender(page: Page, script: str) -> None:
    """Run a filter change and wait for the page to have drawn its answer."""
    before = int(page.evaluate("Number(document.body.dataset.renders)"))
    page.evaluate(script)
    page.wait_for(
        f"Number(document.body.dataset.renders) > {before} && document.body.dataset.state === 'ready'",
        "the page redrawn after a filter change",
    )


def choose(element_id: str, value: str) -> str:
    return (
        f"(() => {{ const e = document.getElementById({element_id!r}); e.value = {value!r};"
        " e.dispatchEvent(new Event('change')); return e.value; })()"
    )


def artifacts(tmp_path: Path) -> Path:
    configured = os.environ.get("LABELLOOP_TEST_ARTIFACTS")
    where = Path(configured) if configured else tmp_path
    where.mkdir(parents=True, exist_ok=True)
    return where


def create_key(workdir: Path, *scopes: str) -> str:
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    done = subprocess.run(
        [*labelloop_command(), "keys", "create", "--name", "dashboard-test", *args],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]


def eventually(what: str, probe: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def test_the_dashboard_shows_the_apis_figures_and_its_filters_change_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    base = now.replace(minute=0, second=0, microsecond=0) - 6 * HOUR
    with serve(tmp_path, auth="required", auth_refresh="100ms", sweep_interval="200ms") as server:
        token = create_key(tmp_path, "ingest", "ops")
        headers = {"authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as http:
            eventually("the new key accepted", lambda: http.get("/v1/metrics/pipeline").status_code == 200)
            post_in_event_time_order(http, workload(base))

            def settled() -> bool:  # idle: the wall clock stands in for the watermark, recsys all sealed
                figures = http.get("/v1/metrics/feedback-loop", params={"use_case": "recsys"}).json()
                return bool(figures["use_cases"]["recsys"]["pending"] == 0)

            eventually("every recsys label final", settled)

            with chromium(tmp_path) as page:
                page.navigate(f"{server.base_url}/dashboard")
                # The shell is open; its first request is refused (401) and the page asks for a key.
                page.wait_for("document.body?.dataset.state === 'needs-key'", "the key dialog")
                assert page.evaluate("document.getElementById('key-dialog').open")
                assert page.evaluate("sessionStorage.length") == 0
                page.evaluate(
                    f"document.getElementById('key-input').value = {token!r};"
                    "document.getElementById('key-submit').click()"
                )
                page.wait_for("document.body?.dataset.state === 'ready'", "the figures")
                assert page.evaluate("document.getElementById('f-use-case').value") == "recsys"  # the busiest
                recsys = check_against_api(page, http)
                assert recsys["served"] == 80
                assert (recsys["revisions"], recsys["late_events"]) == (8, 8)
                assert page.evaluate("location.href") == f"{server.base_url}/dashboard"  # no key in the URL

                # Window advice at the default 2%: the late clicks (25 min) need 30 min.
                advice = check_advice(page, http)
                assert advice["max_fake_negative_rate"] == 0.02
                assert (advice["current_window_s"], advice["window_s"]) == (600, 1800)
                # A target the curve itself names: the rate of the point before the one the limiting
                # type was advised, so its advised window, and the use case's, come earlier.
                limiting = next(a for a in advice["event_types"].values() if a["advised"]["window_s"] == 1800)
                before = next(p for p in reversed(limiting["curve"]) if p["window_s"] < 1800)
                rerender(page, choose("advice-target", str(before["fake_negative_rate"])))
                looser = check_advice(page, http)
                assert looser["window_s"] == 600  # the clicks' rate at 20 min is already theirs at 10 min
                assert "already is the shortest" in page.evaluate(
                    "document.getElementById('advice-summary').textContent"
                )
                rerender(page, choose("advice-target", "0"))  # not a rate: said, and no request made
                assert "strictly between 0 and 1" in page.evaluate(
                    "document.getElementById('advice-summary').textContent"
                )
                assert page.evaluate("document.querySelectorAll('article.advice').length") == 0
                rerender(page, choose("advice-target", "0.02"))
                check_advice(page, http)

                rerender(page, choose("f-use-case", "eta"))
                eta = check_against_api(page, http)
                assert (eta["served"], eta["labels_by_kind"]["natural"]) == (20, 20)
                assert eta["pending"] == 20
                # Its 6 h window is beyond what the trips (1-3 h old) have shown: no "now" mark. The
                # rest of its curve moves as the cohorts age, so it is not compared here.
                assert {i["name"]: i["value"] for i in figures_on(page)}["advice.current_window_s"] == 21600
                article = "article.advice[data-event-type='trip_completed']"
                assert "beyond the horizon" in page.evaluate(f"document.querySelector({article!r} + ' h3').textContent")
                assert page.evaluate(f"document.querySelector({article!r} + ' line.mark-current')") is None

                # A served range of two hours: half the recsys predictions.
                rerender(page, choose("f-use-case", "recsys"))
                page.evaluate(
                    f"document.getElementById('f-from').value = {(base + 2 * HOUR).strftime('%Y-%m-%dT%H:%M')!r};"
                    f"document.getElementById('f-to').value = {(base + 4 * HOUR).strftime('%Y-%m-%dT%H:%M')!r}"
                )
                rerender(page, choose("f-range", "custom"))
                ranged = check_against_api(page, http)
                assert ranged["served"] == 40
                assert ranged["labels_by_kind"] != recsys["labels_by_kind"]

                # A model: the per-model mix and table, and a note that the rest has no model dimension.
                rerender(page, choose("f-model", "ranker"))
                rerender(page, choose("f-version", "8"))
                query = dict(parse_qsl(page.evaluate("document.body.dataset.query")))
                scope = {k: query[k] for k in ("use_case", "since", "until")}
                scope |= {"model": "ranker", "model_version": "8"}
                models = http.get("/v1/metrics/models", params=scope).json()
                (row,) = models["use_cases"]["recsys"]
                mix = {i["name"]: i for i in figures_on(page) if i["scope"] == "model"}
                for kind, count in row["labels_by_kind"].items():
                    assert_shows(mix[f"labels_by_kind.{kind}"], count)
                assert page.evaluate("!document.getElementById('model-note').hidden")
                assert "no model dimension" in page.evaluate("document.getElementById('model-note').textContent")
                check_against_api(page, http)  # the use case's figures, unchanged by the model filter

                assert page.problems() == []
                shot = page.screenshot(artifacts(tmp_path) / "dashboard.png")
    assert shot.stat().st_size > 10_000
    assert re.match(rb"\x89PNG", shot.read_bytes()[:4])
    with capsys.disabled():
        print(f"\ndashboard screenshot: {shot}")
