"""Peers built with existing stream-processing tools, same input as the joiner (predictions and
one event each, preloaded in Kafka), same 10-minute implicit-negative window, labels checked
against the generator's truth; input records/s beside raw aiokafka consumption of the same topics.

(b) a plain aiokafka consumer that writes each `getmany` batch in one SQLite transaction:
    INSERT OR IGNORE predictions and events, UPDATE ... RETURNING labels, implicit negatives
    from a partial index on the window deadline once the largest event time seen passes it.
(a) a quixstreams Application (run in a child process: `python -m bench.peers quix ARGS.json`)
    over both topics concatenated, keyed by prediction_id, a hopping window of 2 x 10 min with
    a step of 10 min reducing to one label per prediction.

quixstreams is not a labelloop dependency: `pip install quixstreams` into the venv to measure it;
without it the scenario returns (b) alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.data import BASE, SEAL, WINDOW, Workload
from bench.joiner import raw_consumption
from bench.kafka_env import BenchEnv, preload, topics_consumer
from bench.report import Figure
from service.config import Settings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
WINDOW_US = WINDOW // US
SEAL_US = SEAL // US
TICK_AT = BASE + timedelta(days=1)  # closes every window of the workload


def _us(iso: str) -> int:
    return (datetime.fromisoformat(iso) - EPOCH) // US


def _positive(body: dict[str, Any]) -> bool:
    """The recsys policy's binary rule, reduced to what the generator produces."""
    kind = body.get("type")
    if kind in ("click", "purchase"):
        return True
    value = body.get("value")
    return kind == "rating" and isinstance(value, int | float) and value >= 4


def window_truth(work: Workload) -> int:
    """Positives when only events within the 10-minute window count (no revision up to the seal)."""
    served = {p.prediction_id: p.served_at for p in work.predictions}
    return sum(
        e.occurred_at - served[e.prediction_id] <= WINDOW
        and (e.type in ("click", "purchase") or (e.type == "rating" and (e.value or 0) >= 4))
        for e in work.events
    )


# (b) aiokafka + SQLite ---------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE predictions (
    prediction_id TEXT PRIMARY KEY, served_at INTEGER NOT NULL,
    deadline INTEGER NOT NULL, seal INTEGER NOT NULL, label INTEGER
);
CREATE INDEX predictions_pending ON predictions (deadline) WHERE label IS NULL;
CREATE TABLE events (
    event_id TEXT PRIMARY KEY, prediction_id TEXT NOT NULL, occurred_at INTEGER NOT NULL, positive INTEGER NOT NULL
);
CREATE INDEX events_positive ON events (prediction_id) WHERE positive;
CREATE TEMP TABLE touched (prediction_id TEXT PRIMARY KEY);
"""

LABEL_POSITIVE = """
UPDATE predictions SET label = 1
WHERE prediction_id IN (SELECT prediction_id FROM touched) AND label IS NOT 1
  AND EXISTS (SELECT 1 FROM events e WHERE e.prediction_id = predictions.prediction_id
              AND e.positive AND e.occurred_at <= predictions.seal)
RETURNING prediction_id
"""

LABEL_NEGATIVE = "UPDATE predictions SET label = 0 WHERE label IS NULL AND deadline < ? RETURNING prediction_id"


def _write_batch(db: sqlite3.Connection, preds: list[tuple], events: list[tuple], clock: int) -> tuple[int, int]:
    """One transaction: rows in, then the labels they settle (positives in either arrival order:
    a prediction's earlier events are looked up when it lands), then implicit negatives."""
    with db:
        db.executemany("INSERT OR IGNORE INTO predictions VALUES (?, ?, ?, ?, NULL)", preds)
        db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)", events)
        db.execute("DELETE FROM touched")
        db.executemany(
            "INSERT OR IGNORE INTO touched VALUES (?)",
            [(p[0],) for p in preds] + [(e[1],) for e in events if e[3]],
        )
        positives = len(db.execute(LABEL_POSITIVE).fetchall())
        negatives = len(db.execute(LABEL_NEGATIVE, (clock,)).fetchall())
    return positives, negatives


async def aiokafka_sqlite(settings: Settings, total: int, path: Path) -> tuple[float, int, int]:
    """Input records/s from the first batch read to the last commit; positives and unlabelled
    predictions (deadline not yet passed by the event clock) at the end."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.executescript(SCHEMA)
    consumer = topics_consumer(settings, "peer-sqlite")
    await consumer.start()
    try:
        seen, clock, started = 0, 0, None
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if not batch:
                continue
            if started is None:
                started = time.perf_counter()
            preds: list[tuple] = []
            events: list[tuple] = []
            for tp, messages in batch.items():
                seen += len(messages)
                if tp.topic == settings.kafka_predictions_topic:
                    for m in messages:
                        body = orjson.loads(m.value)
                        served = _us(body["served_at"])
                        clock = max(clock, served)
                        preds.append((body["prediction_id"], served, served + WINDOW_US, served + SEAL_US))
                else:
                    for m in messages:
                        body = orjson.loads(m.value)
                        if "event_id" not in body:
                            continue
                        occurred = _us(body["occurred_at"])
                        clock = max(clock, occurred)
                        events.append((body["event_id"], body["prediction_id"], occurred, int(_positive(body))))
            await asyncio.to_thread(_write_batch, db, preds, events, clock)
            await consumer.commit()
        assert started is not None
        rate = total / (time.perf_counter() - started)
        positives, pending = db.execute(
            "SELECT count(*) FILTER (WHERE label = 1), count(*) FILTER (WHERE label IS NULL) FROM predictions"
        ).fetchone()
        return rate, int(positives), int(pending)
    finally:
        await consumer.stop()
        db.close()


# (a) quixstreams -------------------------------------------------------------------------------


async def _ticks(settings: Settings, partitions: int) -> None:
    """One far-future message per events partition: a window closes only when its partition's
    event time passes its end, and the stream otherwise stops short of the last windows."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for p in range(partitions):
            body = {"tick": True, "occurred_at": TICK_AT.isoformat()}
            await producer.send_and_wait(
                settings.kafka_events_topic, orjson.dumps(body), key=f"tick-{p}".encode(), partition=p
            )
    finally:
        await producer.stop()


def _quix_child(args: dict[str, Any]) -> None:
    """Runs in its own process (quixstreams installs signal handlers, wants the main thread)."""
    born = time.perf_counter()
    from quixstreams import Application

    app = Application(
        broker_address=args["bootstrap"],
        consumer_group=args["group"],
        auto_offset_reset="earliest",
        state_dir=args["state_dir"],
        max_partition_buffer_size=args["buffer"],
        loglevel="INFO",
        # Tansu has no InitProducerId: with quixstreams' default idempotent producer, the first
        # checkpoint (changelog + offsets) stalled ~90 s.
        producer_extra_config={"enable.idempotence": False},
    )

    def timestamp(value: Any, headers: Any, ts: int, ts_type: Any) -> int:
        moment = value.get("served_at") or value.get("occurred_at")
        return int(datetime.fromisoformat(moment).timestamp() * 1000)

    preds = app.topic(args["predictions"], value_deserializer="json", timestamp_extractor=timestamp)
    events = app.topic(args["events"], value_deserializer="json", timestamp_extractor=timestamp)
    expected_inputs, expected_labels = args["inputs"], args["predictions_n"]
    state: dict[str, Any] = {"inputs": 0, "first": None, "last": None}
    labels: dict[str, int] = {}

    def count(value: Any) -> None:
        if state["first"] is None:
            state["first"] = time.perf_counter()
        state["inputs"] += 1

    def initializer(value: dict[str, Any]) -> dict[str, Any]:
        return reducer({"s": None, "p": None}, value)

    def reducer(agg: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
        if "served_at" in value:
            agg["s"] = _us(value["served_at"])
        elif "event_id" in value and _positive(value):
            occurred = _us(value["occurred_at"])
            agg["p"] = occurred if agg["p"] is None else min(agg["p"], occurred)
        return agg

    def collect(value: dict[str, Any], key: Any, ts: int, headers: Any) -> None:
        agg, start_ms = value["value"], value["start"]
        served = agg["s"]
        # Each prediction lies in two windows; the one it opens (served in its first step) sees
        # at least the whole 10 minutes after it.
        if served is not None and start_ms * 1000 <= served < (start_ms + args["step_ms"]) * 1000:
            labels[key.decode() if isinstance(key, bytes) else key] = int(
                agg["p"] is not None and agg["p"] - served <= WINDOW_US
            )
            state["last"] = time.perf_counter()
            if len(labels) >= expected_labels and state["inputs"] >= expected_inputs:
                app.stop()

    sdf = app.dataframe(preds).concat(app.dataframe(events))
    sdf = sdf.update(count)
    sdf = (
        sdf.hopping_window(duration_ms=2 * args["step_ms"], step_ms=args["step_ms"])
        .reduce(reducer, initializer)
        .final(closing_strategy="partition")
    )
    sdf = sdf.update(collect, metadata=True)
    app.run()  # returns after the final checkpoint: state changelog and offsets committed
    done = time.perf_counter()
    Path(args["out"]).write_text(
        json.dumps(
            {
                "inputs": state["inputs"],
                "labels": len(labels),
                "positives": sum(labels.values()),
                "elapsed": (state["last"] or 0) - (state["first"] or 0),  # first input to last label
                "committed": done - (state["first"] or done),  # first input to final checkpoint
                "startup": (state["first"] or born) - born,
            }
        )
    )


def quix_run(settings: Settings, work: Workload, logs: Path, buffer: int, timeout: float) -> dict[str, Any]:
    """The quixstreams peer in a child process; its result, or {"error": ...}."""
    tag = uuid.uuid4().hex[:6]
    out = logs / f"peer-quix-{tag}.json"
    log = logs / f"peer-quix-{tag}.log"
    args = {
        "bootstrap": settings.kafka_bootstrap_servers,
        "group": f"peer-quix-{tag}",
        "state_dir": str(logs / f"quix-state-{tag}"),
        "buffer": buffer,
        "predictions": settings.kafka_predictions_topic,
        "events": settings.kafka_events_topic,
        "predictions_n": len(work.predictions),
        "inputs": len(work.predictions) + len(work.events) + settings.kafka_partitions,  # + ticks
        "step_ms": WINDOW // timedelta(milliseconds=1),
        "out": str(out),
    }
    spec = logs / f"peer-quix-{tag}-args.json"
    spec.write_text(json.dumps(args))
    with log.open("ab") as sink:
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.peers", "quix", str(spec)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.terminate()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if child.returncode == 0 and out.exists():
        return dict(json.loads(out.read_text()))
    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
    return {"error": f"exit {child.returncode} (timeout {timeout:.0f} s?): " + " | ".join(tail), "log": str(log)}


def _quix_available() -> str | None:
    try:
        import quixstreams

        return str(quixstreams.__version__)
    except ImportError:
        return None


# the scenario --------------------------------------------------------------------------------


async def scenario(env: BenchEnv, work: Workload, logs: Path) -> list[Figure]:
    total = len(work.predictions) + len(work.events)
    n = len(work.predictions)
    settings = env.settings()
    await preload(settings, work)  # creates the topics with explicit configs (retention.ms)
    raw = await raw_consumption(settings, total)
    reference = "raw aiokafka consumption, same topics"
    size = f"{n:,} predictions + {len(work.events):,} events"
    figures: list[Figure] = []

    with tempfile.TemporaryDirectory(prefix="peer-sqlite-", dir=logs) as scratch:
        rate, positives, pending = await aiokafka_sqlite(settings, total, Path(scratch) / "labels.db")
    verdict = (
        "labels = truth"
        if positives == work.expected_positive
        else (f"MISMATCH {positives:,} positives vs truth {work.expected_positive:,}")
    )
    if pending:
        verdict += f", {pending:,} unlabelled (deadline after the last event time)"
    figures.append(
        Figure(
            "peers",
            f"(b) aiokafka getmany + SQLite transaction per batch, {size} ({verdict})",
            rate,
            "records/s",
            reference,
            raw,
        )
    )

    version = _quix_available()
    if version is None:
        return figures
    await _ticks(settings, settings.kafka_partitions)
    truth10 = window_truth(work)
    for buffer in (10_000, 100_000):
        result = await asyncio.to_thread(quix_run, settings, work, logs, buffer, max(120.0, total / 1000))
        label = f"(a) quixstreams {version}, hopping 20 min / step 10 min, max_partition_buffer_size {buffer:,}, {size}"
        if "error" in result:
            figures.append(Figure("peers", f"{label} (FAILED: {result['error']})", 0.0, "records/s", reference, raw))
            continue
        got = int(result["positives"])
        if result["labels"] != n:
            check = f"only {result['labels']:,} of {n:,} labelled"
        elif got == truth10:
            check = "labels = 10-min window truth"
        else:
            check = f"MISMATCH {got:,} positives vs 10-min window truth {truth10:,}"
        check += f"; misses {work.expected_positive - got:,} late positives the seal keeps"
        # Like the joiner's figure (first committed row to last): to the final checkpoint commit.
        rate = (total / result["committed"]) if result["committed"] > 0 else 0.0
        until_label = (total / result["elapsed"]) if result["elapsed"] > 0 else 0.0
        check += f"; {until_label:,.0f}/s to the last label, before the final commit"
        figures.append(Figure("peers", f"{label} ({check})", rate, "records/s", reference, raw))
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["quix"]:
        _quix_child(json.loads(Path(sys.argv[2]).read_text()))
    else:
        sys.exit("usage: python -m bench.peers quix ARGS.json (the scenario's child process)")
