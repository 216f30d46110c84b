"""Two checkouts of labelloop side by side, in alternating rounds on this machine: single-record
rates over HTTP in each mode (and the bare route's, as the ceiling of each round), and the joiner's
rate on preloaded topics. Each tree runs its own code (`PYTHONPATH=<tree>`) on a store built by its
own migrations; the load generator, the workload and the broker are this checkout's. Figures move
by 2x between boots of the machine, so a before/after holds only when measured like this.

    git worktree add /tmp/before <commit>
    python -m bench.pair http /tmp/before . --rounds 2
    python -m bench.pair joiner /tmp/before . --rounds 3 --predictions 25000

Prints one line per measurement: tree, round, mode, figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench.data import workload
from bench.ingest import LATENCY_CONCURRENCY, SINGLE_CONCURRENCY, _wait_healthy, bare_route, load
from bench.joiner import _progress
from bench.kafka_env import ADMIN_DSN, preload
from service.config import Settings
from tests.kafka.broker import Broker, free_port

LOGS = Path("/tmp/labelloop-pair")
SERVER = ADMIN_DSN.rsplit("/", 1)[0]


def _env(tree: Path, values: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    return env | {"PYTHONPATH": str(tree), "LABELLOOP_LOG_LEVEL": "warning", **values}


def _fresh_database(tree: Path) -> tuple[str, str]:
    """A new PostgreSQL database migrated by the tree's own migrations: its name and URL."""
    name = f"labelloop_pair_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = f"{SERVER}/{name}".replace("postgresql://", "postgresql+asyncpg://")
    migrate = [sys.executable, "-m", "service.cli", "migrate"]
    subprocess.run(migrate, env=_env(tree, {"LABELLOOP_DATABASE_URL": url}), cwd=tree, check=True, capture_output=True)
    return name, url


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _kafka(broker: Broker) -> dict[str, str]:
    """Settings of fresh topics and group, spelled as both trees read them."""
    s = uuid.uuid4().hex[:8]
    return {
        "LABELLOOP_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "LABELLOOP_KAFKA_PREDICTIONS_TOPIC": f"pair-predictions-{s}",
        "LABELLOOP_KAFKA_EVENTS_TOPIC": f"pair-events-{s}",
        "LABELLOOP_KAFKA_DLQ_TOPIC": f"pair-dlq-{s}",
        "LABELLOOP_KAFKA_GROUP_ID": f"pair-joiner-{s}",
        "LABELLOOP_KAFKA_PARTITIONS": "4",
        "LABELLOOP_KAFKA_IDEMPOTENCE": "false",  # Tansu has no InitProducerId
        "LABELLOOP_KAFKA_SESSION_TIMEOUT": "PT6S",
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _in_turn(trees: dict[str, Path], number: int) -> list[tuple[str, Path]]:
    """The trees in alternating order from round to round: drift within a session favours neither."""
    pairs = list(trees.items())
    return pairs if number % 2 == 0 else pairs[::-1]


def _serving(tree: Path, values: dict[str, str], measure: Callable[[str], Any]) -> Any:
    port = free_port()
    with (LOGS / "serve.log").open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve"],
            cwd=tree,
            env=_env(tree, {**values, "LABELLOOP_PORT": str(port)}),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url)
        return measure(url)
    finally:
        _stop(process)


def _single(url: str) -> dict[str, tuple[int, float]]:
    """requests/s at 32 clients and p99 ms at 4, per kind."""
    wide = load(url, "single", 3000, concurrency=SINGLE_CONCURRENCY)
    narrow = load(url, "single", 1000, concurrency=LATENCY_CONCURRENCY)
    return {k: (round(wide[k]["requests_per_s"]), round(narrow[k]["p99_ms"], 1)) for k in ("predictions", "events")}


def http(trees: dict[str, Path], rounds: int) -> None:
    broker = Broker()
    broker.start()
    try:
        for number in range(rounds):
            with bare_route(LOGS) as url:
                print("bare", number, _single(url), flush=True)
            for label, tree in _in_turn(trees, number):
                db = LOGS / f"{uuid.uuid4().hex}.db"
                try:
                    print(
                        label,
                        number,
                        "sqlite",
                        _serving(tree, {"LABELLOOP_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}, _single),
                        flush=True,
                    )
                finally:
                    for path in LOGS.glob(f"{db.name}*"):
                        path.unlink()
                for mode, extra in (("postgres", {}), ("kafka", _kafka(broker))):
                    name, url = _fresh_database(tree)
                    values = {"LABELLOOP_DATABASE_URL": url, "LABELLOOP_MIGRATE_ON_START": "false", **extra}
                    try:
                        print(label, number, mode, _serving(tree, values, _single), flush=True)
                    finally:
                        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        broker.stop()


async def _until_final(database: str, records: int, predictions: int, joiner: subprocess.Popen[bytes]) -> float:
    """records/s from the first committed row until every label is final (as bench.joiner counts)."""
    conn = await asyncpg.connect(f"{SERVER}/{database}")
    try:
        first = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            done, final, _ = await _progress(conn)
            if done and first is None:
                first = (time.perf_counter(), done)
            if done >= records and final == predictions:
                assert first is not None
                return float(records - first[1]) / (time.perf_counter() - first[0])
            if joiner.poll() is not None:
                raise RuntimeError(f"the joiner exited; see {LOGS / 'consume.log'}")
            await asyncio.sleep(0.2)
        raise RuntimeError(f"labels not final after 30 minutes; see {LOGS / 'consume.log'}")
    finally:
        await conn.close()


async def _positives(database: str) -> int:
    conn = await asyncpg.connect(f"{SERVER}/{database}")
    try:
        return int(await conn.fetchval("SELECT count(*) FROM predictions WHERE label = '1'::jsonb"))
    finally:
        await conn.close()


def joiner(trees: dict[str, Path], rounds: int, predictions: int) -> None:
    broker = Broker()
    broker.start()
    work = workload(predictions)
    records = len(work.predictions) + len(work.events)
    try:
        for number in range(rounds):
            for label, tree in _in_turn(trees, number):
                name, url = _fresh_database(tree)
                kafka = _kafka(broker)
                topics = Settings(
                    kafka_bootstrap_servers=broker.bootstrap,
                    kafka_predictions_topic=kafka["LABELLOOP_KAFKA_PREDICTIONS_TOPIC"],
                    kafka_events_topic=kafka["LABELLOOP_KAFKA_EVENTS_TOPIC"],
                    kafka_partitions=4,
                    kafka_idempotence=False,
                )
                asyncio.run(preload(topics, work))
                with (LOGS / "consume.log").open("ab") as out:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "service.cli", "consume"],
                        cwd=tree,
                        env=_env(tree, {"LABELLOOP_DATABASE_URL": url, "LABELLOOP_MIGRATE_ON_START": "false", **kafka}),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                try:
                    rate = asyncio.run(_until_final(name, records, predictions, process))
                    positives = asyncio.run(_positives(name))
                    right = "right" if positives == work.expected_positive else f"WRONG: {positives} positives"
                    print(label, number, "joiner", f"{rate:,.0f} records/s, labels {right}", flush=True)
                finally:
                    _stop(process)
                    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["http", "joiner"])
    parser.add_argument("before", type=Path, help="a checkout (a git worktree) of the earlier commit")
    parser.add_argument("after", type=Path, help="a checkout of the later commit")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--predictions", type=int, default=25_000, help="joiner: each with one event")
    args = parser.parse_args()
    if args.predictions < 10_000:  # fewer are all committed before the first look: no rate to measure
        parser.error("--predictions: at least 10,000")
    LOGS.mkdir(exist_ok=True)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    if args.what == "http":
        http(trees, args.rounds)
    else:
        joiner(trees, args.rounds, args.predictions)


if __name__ == "__main__":
    main()
