"""End-to-end label freshness and implicit-negative timeliness, on live wall-clock timestamps.

Freshness (scenario 4): a load process (bench/freshness_load.py) posts one recsys prediction per
click to come, then posts the clicks at the target rate, one small batch every 50 ms, with
occurred_at = now; for each click it records the wall time its 202 arrived. This process polls
GET /v1/datasets/recsys?since=<last seq> every 50 ms and records the wall time at which each
prediction's row (its positive label) first came back. Freshness = first seen - 202, per click.
Both processes read the same clock (time.time() on one machine). The poll interval is part of
what is measured: a label is seen up to one interval plus one round trip after it committed.

Reference: the p50 round trip of GET /healthz, one request at a time, against the same server in
the same run, so the ratio reads "how many HTTP round trips the pipeline costs".

Implicit-negative timeliness (scenario 5): see negative_timeliness().
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import orjson
import yaml

from bench.ingest import load, server
from bench.joiner import _assigned
from bench.kafka_env import ALL_TABLES, BenchEnv, start_consumer
from bench.report import Figure
from service.config import Settings
from service.core.policy import BUNDLED_POLICIES
from service.kafka.topics import ensure_topics

POLL_INTERVAL = 0.05  # seconds between dataset polls (and between the load's batches)
SETTLE = 30.0  # give up waiting for labels once none new showed up for this long
WAIT_CAP = 600.0  # and in any case this long after the load ended
PHOTON_AVERAGE_MS = 10_000.0  # Photon (Ananthanarayanan et al., SIGMOD 2013): average latency under 10 s
JOINER_POLL_MS = 500.0  # consumers.joiner: getmany(timeout_ms=500); an idle joiner applies a batch this often


def quantile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _seconds(d: timedelta) -> str:
    s = d.total_seconds()
    return f"{s:g} s"


@dataclass
class Poller:
    """Polls the dataset with a since= cursor; keeps when each prediction's row was first seen."""

    url: str
    use_case: str = "recsys"
    interval: float = POLL_INTERVAL
    cursor: int = 0
    seen: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    round_trips: list[float] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            while not stop.is_set():
                started = time.time()
                response = await client.get(f"/v1/datasets/{self.use_case}", params={"since": self.cursor})
                response.raise_for_status()
                arrived = time.time()
                for line in response.content.splitlines():
                    row = orjson.loads(line)
                    self.cursor = max(self.cursor, row["seq"])
                    self.seen.setdefault(row["prediction_id"], (arrived, row))
                self.round_trips.append(arrived - started)
                await asyncio.sleep(max(0.0, self.interval - (time.time() - started)))

    async def wait_for(self, ids: set[str], stall: float, cap: float = WAIT_CAP) -> float:
        """Return once every id was seen, or when none new was seen for `stall` seconds, or after
        `cap` seconds; returns the wall time it stopped waiting."""
        started = last_progress = time.monotonic()
        count = len(self.seen)
        for _ in range(int(cap * 10) + 1):
            now = time.monotonic()
            if len(self.seen) > count:
                count, last_progress = len(self.seen), now
            if ids <= self.seen.keys() or now - last_progress > stall or now - started > cap:
                break
            await asyncio.sleep(0.1)
        return time.time()


def _log(path: Path) -> IO[bytes]:
    return path.open("ab")


async def _load(url: str, logs: Path, mode: str, run: str, *args: str) -> asyncio.subprocess.Process:
    out = logs / f"freshness-{run}.json"
    with _log(logs / "freshness-load.log") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.freshness_load",
            url,
            mode,
            "--run",
            run,
            "--out",
            str(out),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )


async def _expect(process: asyncio.subprocess.Process, word: bytes, within: float) -> None:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), within)
    if line.strip() != word:
        raise RuntimeError(f"load process said {line!r}, expected {word!r}; see freshness-load.log")


async def _clicks(
    url: str, logs: Path, rate: int, seconds: int, stored: Callable[[int], Awaitable[None]]
) -> dict[str, Any]:
    """Run the click load against `url`; `stored(n)` returns once the n predictions are applied."""
    run = f"f{uuid.uuid4().hex[:6]}"
    total = rate * seconds
    process = await _load(url, logs, "clicks", run, "--rate", str(rate), "--seconds", str(seconds))
    poller, stop = Poller(url), asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await _expect(process, b"posted", 600)
        await stored(total)
        task = asyncio.create_task(poller.run(stop))
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        await _expect(process, b"done", seconds * 4 + 120)
        await asyncio.wait_for(process.wait(), 30)
        data = orjson.loads((logs / f"freshness-{run}.json").read_bytes())
        acked: dict[str, float] = {}
        sent = [b[3] for b in data["batches"]]
        for start, count, _stamp, _sent, at, status in data["batches"]:
            if status == 202:
                acked.update({f"{run}-p{i:07d}": at for i in range(start, start + count)})
        gave_up = await poller.wait_for(set(acked), SETTLE)
    finally:
        stop.set()
        if task is not None:
            await task
        if process.returncode is None:
            process.terminate()
            await process.wait()
    # A label never seen counts as seen when the wait ended: a lower bound, named in the figures.
    fresh = [poller.seen[pid][0] - at if pid in poller.seen else gave_up - at for pid, at in acked.items()]
    if not fresh:
        raise RuntimeError("no click was acknowledged")
    wrong = sum(1 for pid in acked if pid in poller.seen and poller.seen[pid][1]["label"] != 1)
    return {
        "fresh_ms": [1000 * f for f in fresh],
        "rate": len(acked) / (max(acked.values()) - min(sent)),
        "rejected": total - len(acked),
        "missing": sum(1 for pid in acked if pid not in poller.seen),
        "wrong": wrong,
        "poll_ms": 1000 * statistics.median(poller.round_trips),
        "post_ms": [1000 * (b[4] - b[3]) for b in data["batches"]],
        "per_batch": data["batches"][0][1],
    }


def _freshness_figures(
    scenario: str, result: dict[str, Any], rate: int, seconds: int, healthz_ms: float
) -> list[Figure]:
    fresh = result["fresh_ms"]
    what = (
        f"event 202 -> positive label seen via GET /v1/datasets?since= ({rate:,}/s for {seconds} s, polled every 50 ms)"
    )
    if result["missing"]:
        what += f" [{result['missing']:,} never seen, counted at the end of the wait: lower bounds]"
    ref = "GET /healthz p50 round trip"
    figures = [
        Figure(scenario, f"{what}: p50", quantile(fresh, 0.5), "ms", ref, healthz_ms),
        Figure(scenario, f"{what}: p99", quantile(fresh, 0.99), "ms", ref, healthz_ms, "p99 < 1 s"),
        Figure(scenario, f"{what}: max", max(fresh), "ms", ref, healthz_ms),
        Figure(
            scenario, f"{what}: mean", statistics.fmean(fresh), "ms", "Photon, published average", PHOTON_AVERAGE_MS
        ),
        Figure(
            scenario, "clicks acknowledged per second (achieved load)", result["rate"], "events/s", "target rate", rate
        ),
        Figure(scenario, f"labels never seen (waited until none new for {SETTLE:g} s)", result["missing"], "labels"),
        Figure(scenario, "GET /v1/datasets?since= round trip during the load, p50", result["poll_ms"], "ms"),
        Figure(
            scenario,
            f"POST /v1/events round trip ({result['per_batch']} clicks), p99, not included above",
            quantile(result["post_ms"], 0.99),
            "ms",
        ),
    ]
    if result["rejected"]:
        figures.append(Figure(scenario, "clicks not acknowledged with 202", result["rejected"], "events"))
    if result["wrong"]:
        figures.append(Figure(scenario, "labels first seen with a value other than 1", result["wrong"], "labels"))
    return figures


async def _healthz_p50(url: str) -> float:
    measured = await asyncio.to_thread(load, url, "healthz", 300, 1)
    return float(measured["p50_ms"])


async def _wait_for_group(settings: Settings, paths: list[Path], consumers: list[Any], logs: Path) -> None:
    """As bench.joiner.run_joiners: every joiner has partitions and together they own all."""
    every = {f"{t}:{p}" for t in (settings.kafka_predictions_topic, settings.kafka_events_topic) for p in range(4)}
    deadline = time.monotonic() + 120
    while [len(_assigned(p)) for p in paths].count(0) or set().union(*map(_assigned, paths)) != every:
        if time.monotonic() > deadline or any(c.poll() is not None for c in consumers):
            raise RuntimeError(f"the joiners' group did not form; see {logs}")
        await asyncio.sleep(0.2)


async def _autovacuum(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SHOW autovacuum"))


async def _analyze_every(dsn: str, seconds: float, stop: asyncio.Event) -> None:
    """ANALYZE the store's tables every `seconds`: what autovacuum would do, were it on."""
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            await conn.execute("ANALYZE predictions, events, label_history")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _joiners(
    env: BenchEnv, settings: Settings, logs: Path, processes: int, analyze_every: float | None
) -> AsyncIterator[tuple[asyncpg.Connection, list[subprocess.Popen[bytes]], str]]:
    """Truncate the store (as the joiner scenario does, so that no earlier scenario's predictions
    are swept by these joiners), start `processes` joiners and wait for their group to form.
    Yields a connection, the processes and a note on table statistics for the scenario name."""
    await ensure_topics(settings)
    conn = await asyncpg.connect(env.dsn)
    await conn.execute(f"TRUNCATE {ALL_TABLES}")
    paths = [logs / f"freshness-joiner-{uuid.uuid4().hex[:4]}-{i}.log" for i in range(processes)]
    consumers = [start_consumer(settings, path) for path in paths]
    stop = asyncio.Event()
    analyzer = None
    try:
        await _wait_for_group(settings, paths, consumers, logs)
        if analyze_every is not None:
            analyzer = asyncio.create_task(_analyze_every(env.dsn, analyze_every, stop))
            note = f"ANALYZE every {analyze_every:g} s"
        else:
            note = f"autovacuum {await _autovacuum(conn)}"
        yield conn, consumers, note
    finally:
        stop.set()
        if analyzer is not None:
            await analyzer
        for c in consumers:
            c.terminate()
        for c in consumers:
            c.wait(timeout=30)
        await conn.close()


async def kafka_freshness(
    env: BenchEnv, logs: Path, rate: int, seconds: int, processes: int = 2, analyze_every: float | None = None
) -> list[Figure]:
    """Kafka mode: `labelloop serve` produces (202 once the broker acknowledged), `processes`
    `labelloop consume` joiners apply to PostgreSQL. The store is truncated first. The clicks
    start once every prediction is in PostgreSQL: what is measured is the click's path.

    The joiners' lookups are prepared statements (`= ANY($1)`); PostgreSQL (plan_cache_mode
    auto) settles on a generic plan chosen while the tables were empty, a sequential scan, and
    keeps it until an ANALYZE of the table invalidates it. With autovacuum off (as on the bench
    machine) that never happens and each batch scans the whole events table. The scenario name
    says which case was measured: the server's autovacuum setting, or `analyze_every` seconds
    between ANALYZEs that this harness runs in the place of autovacuum."""
    settings = env.settings(log_level="info")
    async with _joiners(env, settings, logs, processes, analyze_every) as (conn, consumers, note):

        async def stored(n: int) -> None:
            deadline = time.monotonic() + 600
            while int(await conn.fetchval("SELECT count(*) FROM predictions") or 0) < n:
                if time.monotonic() > deadline or any(c.poll() is not None for c in consumers):
                    raise RuntimeError(f"the joiners did not store the predictions; see {logs}")
                await asyncio.sleep(0.2)

        with server(logs, settings=settings.model_copy(update={"log_level": "warning"})) as url:
            healthz = await _healthz_p50(url)
            result = await _clicks(url, logs, rate, seconds, stored)
    joiners = f"{processes} joiner{'s' if processes > 1 else ''}"
    return _freshness_figures(f"label freshness (Kafka mode, {joiners}, {note})", result, rate, seconds, healthz)


async def embedded_freshness(workdir: Path, rate: int, seconds: int) -> list[Figure]:
    """Embedded mode on a fresh SQLite file: a 202 means committed, labels included, so what
    remains is the polling (interval and round trip) and the commit-to-read path."""

    async def stored(n: int) -> None:  # the predictions' 202s meant committed
        return None

    with server(workdir, db=workdir / f"freshness-{uuid.uuid4().hex[:6]}.db") as url:
        healthz = await _healthz_p50(url)
        result = await _clicks(url, workdir, rate, seconds, stored)
    return _freshness_figures("label freshness (embedded, SQLite)", result, rate, seconds, healthz)


# -- implicit negatives -----------------------------------------------------------------------


def short_window_policies(path: Path, window: str = "2s", lateness: str = "2s") -> Path:
    """The bundled policies with recsys's window and allowed lateness shortened."""
    policies = yaml.safe_load(BUNDLED_POLICIES.read_text())
    policies["use_cases"]["recsys"].update(window=window, allowed_lateness=lateness)
    path.write_text(yaml.safe_dump(policies, sort_keys=False))
    return path


def watermark_crossing(
    arrivals: list[tuple[float, float]], window_end: float, disorder: float, idle: float
) -> tuple[float, str]:
    """When the embedded watermark first reaches `window_end`, and how: ("traffic", the arrival
    whose event time brought max event time - disorder to it) or ("idle", the wall-clock
    stand-in: the first instant t with t - disorder >= window_end and t - last arrival >=
    idle_timeout before the next arrival). `arrivals`: (arrival time, event time) per request,
    in arrival order; event times are capped at their arrival as service.core.windows.observe
    does. This is service.core.windows.effective_watermark evaluated continuously; the service
    only evaluates it per request and per sweep, which is what the measured lag is made of."""
    newest = -math.inf
    for k, (arrived, event_time) in enumerate(arrivals):
        newest = max(newest, min(event_time, arrived))
        if newest - disorder >= window_end:
            return arrived, "traffic"
        idle_from = max(arrived + idle, window_end + disorder)
        following = arrivals[k + 1][0] if k + 1 < len(arrivals) else math.inf
        if idle_from < following:
            return idle_from, "idle"
    raise ValueError("no arrivals")


async def _lineages(url: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(pid: str) -> None:
            async with gate:
                response = await client.get(f"/v1/predictions/{pid}")
                response.raise_for_status()
                found[pid] = response.json()

        await asyncio.gather(*(one(pid) for pid in ids))
    return found


async def _negatives(
    url: str,
    logs: Path,
    settings: Settings,
    n: int,
    spread: float,
    scenario: str,
    crossing_name: str,
    cadence: tuple[str, float],
) -> list[Figure]:
    """Post n predictions over `spread` seconds from a load process, poll the dataset until
    every implicit negative showed up, then read each prediction's lineage."""
    d, idle = settings.allowed_disorder.total_seconds(), settings.idle_timeout.total_seconds()
    run = f"n{uuid.uuid4().hex[:6]}"
    ids = [f"{run}-p{i:07d}" for i in range(n)]
    poller, stop = Poller(url), asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        process = await _load(url, logs, "predictions", run, "--n", str(n), "--seconds", str(spread), "--tick", "0.1")
        assert process.stdin is not None
        process.stdin.close()
        await _expect(process, b"done", spread * 4 + 60)
        await asyncio.wait_for(process.wait(), 30)
        await poller.wait_for(set(ids), 2 + d + idle + SETTLE)  # the first negative is due this late
    finally:
        stop.set()
        await task
    lineages = await _lineages(url, [pid for pid in ids if pid in poller.seen])
    arrivals = sorted(
        {(_epoch(x["prediction"]["received_at"]), _epoch(x["prediction"]["served_at"])) for x in lineages.values()}
    )
    by_path: dict[str, dict[str, list[float]]] = {}
    odd = 0
    for pid, lineage in lineages.items():
        first = lineage["history"][0]
        window_end = _epoch(lineage["window_end"])
        crossing, path = watermark_crossing(arrivals, window_end, d, idle)
        visible, recorded = poller.seen[pid][0], _epoch(first["recorded_at"])
        if (
            first["kind"] != "implicit_negative"
            or first["watermark"] is None
            or _epoch(first["watermark"]) < window_end
        ):
            odd += 1
        lags = by_path.setdefault(path, {"visible": [], "window": [], "recorded": []})
        lags["visible"].append(1000 * (visible - crossing))
        lags["window"].append(1000 * (visible - window_end))
        lags["recorded"].append(1000 * (recorded - crossing))
    knobs = (
        f"{cadence[0]} {cadence[1]:g} ms, idle_timeout {_seconds(settings.idle_timeout)},"
        f" allowed_disorder {_seconds(settings.allowed_disorder)}, window 2 s, {n} predictions over {spread:g} s,"
        " polled every 50 ms"
    )
    names = {"traffic": "passed by traffic", "idle": "passed by the idle watermark"}
    figures = []
    for path in ("traffic", "idle"):
        if path not in by_path:
            continue
        lags = by_path[path]
        label = f"{names[path]} ({len(lags['visible'])} of {n}; {knobs})"
        ref = cadence
        figures += [
            Figure(scenario, f"{label}: visible - {crossing_name}, p50", quantile(lags["visible"], 0.5), "ms", *ref),
            Figure(scenario, f"{label}: visible - {crossing_name}, p99", quantile(lags["visible"], 0.99), "ms", *ref),
            Figure(
                scenario, f"{label}: recorded_at - {crossing_name}, p99", quantile(lags["recorded"], 0.99), "ms", *ref
            ),
            Figure(scenario, f"{label}: visible - W (window end), p50", quantile(lags["window"], 0.5), "ms"),
            Figure(scenario, f"{label}: visible - W (window end), p99", quantile(lags["window"], 0.99), "ms"),
        ]
    missing = n - len(lineages)
    if missing:
        figures.append(Figure(scenario, "implicit negatives never seen", missing, "labels"))
    if odd:
        figures.append(
            Figure(scenario, "first label not an implicit negative recorded at a watermark >= W", odd, "labels")
        )
    return figures


async def negative_timeliness(workdir: Path, n: int = 500, spread: float = 10.0) -> list[Figure]:
    """Embedded mode, recsys with window 2 s and allowed lateness 2 s, default watermark settings
    (allowed_disorder 5 s, idle_timeout 5 s, sweep_interval 1 s). A load process posts n
    predictions (served_at = now) evenly over `spread` seconds and then nothing: no events, no
    other traffic. Every prediction gets an implicit negative when the watermark passes its
    window end W = served_at + 2 s.

    "Watermark passed W" is computed, not observed: from every request's arrival (the
    prediction's received_at, the server clock when the request was read; the unit of work
    takes its own clock after the write lock, ms later) and event time (served_at), the first
    instant the effective watermark reaches W (see watermark_crossing). Predictions served more
    than window + disorder = 7 s before the last one are passed by traffic: the crossing is the
    request that carried a served_at >= W + 5 s, and that request's own sweep closes them.
    The rest are passed by the idle stand-in at max(last arrival + idle_timeout, W + disorder),
    and only the next sweep (every sweep_interval) closes them. "Visible" is the first poll of
    GET /v1/datasets/recsys?since= (every 50 ms) that returned the row; recorded_at is the
    label_history row's (GET /v1/predictions/{id} history[0]), the unit's clock at its start.

    Reported per path: visible - crossing (the service's own lag plus polling), visible - W
    (what a trainer waits after the window end: adds the disorder and, when idle, the time to
    the idle timeout, so it also grows with `spread`), and recorded_at - crossing (the sweep's
    share, without polling)."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{workdir / f'negatives-{uuid.uuid4().hex[:6]}.db'}",
        policies=short_window_policies(workdir / "short-window.yaml"),
        log_level="warning",
    )
    with server(workdir, settings=settings) as url:
        return await _negatives(
            url,
            workdir,
            settings,
            n,
            spread,
            "implicit-negative timeliness (embedded, SQLite)",
            "watermark passed W",
            ("sweep_interval", 1000 * settings.sweep_interval.total_seconds()),
        )


async def kafka_negative_timeliness(
    env: BenchEnv, logs: Path, n: int = 500, spread: float = 10.0, processes: int = 2
) -> list[Figure]:
    """The same load in Kafka mode (joiners close windows; sweep_interval plays no part: each
    joiner applies a batch, empty or not, every getmany of at most 500 ms). Here the watermark
    is the slowest of the 8 partitions' (both topics), each kept by its own joiner from its own
    clock and refreshed only when that joiner reports; the events topic, empty, follows its
    joiner's clock. Its crossing is not observable from outside, so "ideal crossing" is the
    embedded rule applied to the API's receive times (watermark_crossing): a lower bound of the
    real one, which adds the broker hop, each joiner's report cadence and the slowest
    partition. visible - ideal crossing is therefore the whole Kafka-mode overhead."""
    policies = short_window_policies(logs / "short-window.yaml")
    settings = env.settings(policies=policies, log_level="info")
    async with _joiners(env, settings, logs, processes, None) as (_conn, _consumers, note):
        with server(logs, settings=settings.model_copy(update={"log_level": "warning"})) as url:
            joiners = f"{processes} joiner{'s' if processes > 1 else ''}"
            return await _negatives(
                url,
                logs,
                settings,
                n,
                spread,
                f"implicit-negative timeliness (Kafka mode, {joiners}, {note})",
                "ideal crossing",
                ("joiner poll timeout", JOINER_POLL_MS),
            )
