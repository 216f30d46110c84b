"""`labelloop simulate` as a real process against a live `labelloop serve`: it exits 0, and what
it says it sent (its --json summary) is what the service reports: served predictions, events per
type (each duplicate counted once), clock skew per type, delay quantiles within a histogram
bucket; the service's own ingest counters see the duplicates it injected."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.simulate.run import within_histogram
from tests.e2e._process import Server, clean_env, labelloop_command, serve

SEED = 3  # in 5 s at 50/s with the default grace: about 100 events, 4 of them sent twice, 3 skewed
SIMULATE_TIMEOUT_S = 60.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serve(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'labelloop.db'}") as server:
        yield server


def simulate(server: Server, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*labelloop_command(), "simulate", *args],
        cwd=cwd,
        env=clean_env(url=server.base_url),  # the URL from LABELLOOP_URL, as Client.from_env
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SIMULATE_TIMEOUT_S,
        check=False,
    )


def ingested(server: Server) -> dict[tuple[str, str], float]:
    """labelloop_records_ingested_total by (record, outcome), from the Prometheus exposition."""
    text = httpx.get(f"{server.base_url}/metrics").text
    pattern = r'^labelloop_records_ingested_total\{outcome="(\w+)",record="(\w+)"\} (\S+)$'
    return {(record, outcome): float(n) for outcome, record, n in re.findall(pattern, text, re.MULTILINE)}


def test_simulate_recsys_agrees_with_the_feedback_loop_figures(server: Server, tmp_path: Path) -> None:
    done = simulate(
        server, tmp_path, "--scenario", "recsys", "--rate", "50", "--duration", "5", "--seed", str(SEED), "--json"
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{server.output()}"
    summary: dict[str, Any] = json.loads(done.stdout)
    sent = summary["sent"]
    assert summary["agrees"] is True, summary["checks"]
    assert (sent["refused"], sent["undelivered"]) == (0, 0)
    # What this test stands on: traffic of every recsys kind, with duplicates and skew injected.
    assert 200 <= sent["predictions"] <= 300
    assert {"click", "rating", "thumbs"} <= set(sent["events"])
    assert sum(sent["duplicates"].values()) >= 2
    assert sum(sent["skewed"].values()) >= 2
    assert sum(sent["not_happened"].values()) > 0  # the grace ended before some events were due

    # The service, asked here and not through simulate's own reading.
    figures = httpx.get(f"{server.base_url}/v1/metrics/feedback-loop", params={"use_case": "recsys"}).json()
    recsys = figures["use_cases"]["recsys"]
    assert recsys["served"] == sent["predictions"]
    assert recsys["events"] == sent["events"]  # each event once: the duplicates are not counted again
    assert recsys["clock_skew_by_type"] == sent["skewed"]
    assert recsys["clock_skew"] == sum(sent["skewed"].values())
    assert set(recsys["feedback_delay"]) == set(sent["events"])
    for event_type, mine in sent["feedback_delay"].items():
        theirs = recsys["feedback_delay"][event_type]
        assert theirs["count"] == sent["events"][event_type]
        for q in ("p50_s", "p90_s", "p99_s"):
            assert within_histogram(mine[q], theirs[q]), (event_type, q, mine[q], theirs[q])
    assert summary["service"]["events"] == recsys["events"]
    assert summary["service"]["served"] == recsys["served"]

    # The duplicates reached the service, which recognised them.
    counts = ingested(server)
    assert counts[("events", "accepted")] == sum(sent["events"].values())
    assert counts[("events", "duplicate")] == sum(sent["duplicates"].values())
    assert counts[("predictions", "accepted")] == sent["predictions"]


def test_simulate_prints_a_table_and_a_second_run_counts_only_its_own(server: Server, tmp_path: Path) -> None:
    first = simulate(server, tmp_path, "--scenario", "eta", "--rate", "20", "--duration", "2", "--grace", "1")
    assert first.returncode == 0, f"{first.stdout}\n{first.stderr}"
    assert "predictions" in first.stdout
    assert "trip_completed" in first.stdout
    assert "the service agrees with what was sent" in first.stdout
    args = ("--scenario", "eta", "--rate", "20", "--duration", "2", "--grace", "1", "--json")
    second = json.loads(simulate(server, tmp_path, *args).stdout)
    assert second["agrees"] is True, second["checks"]
    assert second["service"]["earlier_served"] > 0
    assert second["service"]["served"] == second["sent"]["predictions"]  # after minus before
    assert not any(k.startswith("delay.") for k in second["checks"])  # quantiles cover both runs: not compared


def test_simulate_without_a_service_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [*labelloop_command(), "simulate", "--duration", "1", "--url", "http://127.0.0.1:9"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=SIMULATE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot reach http://127.0.0.1:9" in done.stderr
