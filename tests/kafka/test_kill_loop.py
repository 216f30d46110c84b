"""A seeded loop of `kill -9`s of two joiners under load ends with exactly the labels the workload
implies: every record applied once, whatever the kills interrupted.

Two `labelloop consume` processes share the group while the test produces a wave every 0.5 s
(recsys, short policy: window 2 s, lateness 2 s; predictions served now). Each round, after a
random pause, a random joiner is killed with SIGKILL, preferably while it holds a database
transaction open (a batch in flight; the test watches its connections in pg_stat_activity), and
is started again at once. LABELLOOP_SOAK_ROUNDS rounds (10 by default; `make soak`: 50),
LABELLOOP_SOAK_SEED seeds them (the seed is in every failure message).

Each wave's predictions cycle through six kinds of feedback:
  0. none: an implicit negative at the window's close;
  1. a click 0.5 s after serving: behavioral 1;
  2. a rating 0.5 s after serving (5 or 2 stars): explicit 1 or 0;
  3. a purchase at 0.3 s and a return at 0.6 s: behavioral 0 (the return outranks it), revised
     once or not at all depending on whether both were applied in one batch;
  4. a click sent twice (the same message): behavioral 1, stored and counted once;
  5. a click that occurred 4.5 s after serving, produced only then, after the seal: too late,
     so an implicit negative;
plus one poison message per topic per wave (a dead letter each).

The reference is the label core itself: `resolve()` over the events counted by their event
times, so each prediction's final label, kind, rule and sources are known from the workload.
The label history is compared as far as it is deterministic: a labeled prediction's provisional
rows are resolutions of prefixes of its events (in the order produced), with consecutive
revisions, and one final row closes it; an implicit negative may reach the seal with or without
a provisional row (a watermark held back by a dead joiner jumps past both deadlines at once)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.core.model import Decision, EventRecord, Evidence, PredictionRecord
from service.core.policy import UseCasePolicy, load_policies
from service.core.resolution import resolve
from service.core.windows import deadlines
from service.kafka.codec import encode
from service.store.records import source_json
from service.store.tables import events, label_history, predictions
from tests.kafka.processes import (
    ConsumerPool,
    ConsumerProcess,
    consumer_processes,
    counters,
    header,
    plain_producer,
    read_topic,
    rows,
    scalar,
    send,
    wait_until,
)

ROUNDS = int(os.environ.get("LABELLOOP_SOAK_ROUNDS", "10"))
SEED = int(os.environ.get("LABELLOOP_SOAK_SEED", "20261129"))
PER_WAVE = 120  # predictions per wave, 20 of each kind
WAVE_EVERY_S = 0.5
PAUSE_S = (0.2, 1.5)  # between a restart and the next kill
AIM_AT_BATCH = 0.8  # the share of rounds that wait for the victim to be inside a transaction
MID_BATCH_WAIT_S = 10  # how long such a round waits (the group may still be rebalancing)
POISON = b"not json {"
TAIL_WAVES = 4  # waves produced after the last kill
LATE = timedelta(milliseconds=4500)  # past the seal: window 2 s + lateness 2 s


@dataclass
class Workload:
    """Everything produced, in the order produced."""

    served: dict[str, datetime] = field(default_factory=dict)
    events: dict[str, list[EventRecord]] = field(default_factory=dict)  # by prediction, distinct
    messages: int = 0
    poison: int = 0
    waves: int = 0

    def add_event(self, event: EventRecord) -> None:
        self.events.setdefault(event.prediction_id, []).append(event)


class Load:
    """Produces a wave every WAVE_EVERY_S until stopped, then the late clicks still due."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.producer = producer
        self.workload = Workload()
        self.late: list[EventRecord] = []  # produced once their occurred_at has passed
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        while not self.stopping.is_set():
            await self._wave()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), WAVE_EVERY_S)
        for _ in range(TAIL_WAVES):
            await self._wave()
            await asyncio.sleep(WAVE_EVERY_S)
        while self.late:
            await self._late_due()
            await asyncio.sleep(0.1)

    async def _wave(self) -> None:
        s, w = self.settings, self.workload
        served = datetime.now(UTC)
        ids = [f"W{w.waves}-{i}" for i in range(PER_WAVE)]
        w.waves += 1
        preds = [PredictionRecord(prediction_id=p, use_case="recsys", served_at=served) for p in ids]
        evs: list[EventRecord] = []
        sent_twice: list[EventRecord] = []
        for i, p in enumerate(ids):
            w.served[p] = served
            kind = i % 6
            if kind == 1:
                evs.append(_event(f"C-{p}", p, "click", served + timedelta(milliseconds=500)))
            elif kind == 2:
                evs.append(_event(f"R-{p}", p, "rating", served + timedelta(milliseconds=500), 5 if i % 12 == 2 else 2))
            elif kind == 3:
                evs.append(_event(f"B-{p}", p, "purchase", served + timedelta(milliseconds=300)))
                evs.append(_event(f"X-{p}", p, "return", served + timedelta(milliseconds=600)))
            elif kind == 4:
                dup = _event(f"D-{p}", p, "click", served + timedelta(milliseconds=500))
                evs.append(dup)
                sent_twice.append(dup)
            elif kind == 5:
                late = _event(f"L-{p}", p, "click", served + LATE)
                self.late.append(late)
                w.add_event(late)
        for e in evs:
            w.add_event(e)
        prediction_messages = [(p.prediction_id.encode(), encode(p), None) for p in preds]
        prediction_messages.append((ids[0].encode(), POISON, None))
        event_messages = [(e.prediction_id.encode(), encode(e), None) for e in [*evs, *sent_twice]]
        event_messages.append((ids[1].encode(), POISON, None))
        await send(self.producer, s.kafka_predictions_topic, prediction_messages)
        await send(self.producer, s.kafka_events_topic, event_messages)
        w.messages += len(prediction_messages) + len(event_messages)
        w.poison += 2
        await self._late_due()

    async def _late_due(self) -> None:
        now = datetime.now(UTC)
        due = [e for e in self.late if e.occurred_at is not None and e.occurred_at <= now]
        if due:
            self.late = [e for e in self.late if e not in due]
            messages = [(e.prediction_id.encode(), encode(e), None) for e in due]
            await send(self.producer, self.settings.kafka_events_topic, messages)
            self.workload.messages += len(messages)


def _event(event_id: str, prediction_id: str, type: str, at: datetime, value: int | None = None) -> EventRecord:
    return EventRecord(event_id=event_id, prediction_id=prediction_id, type=type, occurred_at=at, value=value)


# -- the kills ------------------------------------------------------------------------------------


def postgres_ports(pid: int, server_port: int) -> set[int]:
    """Local ports of the process's TCP connections to the PostgreSQL server, from /proc."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                local, remote, inode = parts[1], parts[2], parts[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def in_transaction(engine: AsyncEngine, consumer: ConsumerProcess) -> bool:
    """Whether the joiner holds a database transaction open right now (a batch in flight)."""
    ports = postgres_ports(consumer.process.pid, engine.url.port or 5432)
    if not ports:
        return False
    found: int = await scalar(
        engine,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND client_port = ANY(:ports) AND xact_start IS NOT NULL",
        ports=sorted(ports),
    )
    return found > 0


@dataclass
class KillLog:
    mid_batch: int = 0
    between: int = 0
    lines: list[str] = field(default_factory=list)


async def kill_loop(
    pool: ConsumerPool, slots: list[ConsumerProcess], s: Settings, engine: AsyncEngine, rng: random.Random
) -> KillLog:
    """Each round: a pause, a random victim, then (mostly) a wait for it to be inside a
    transaction; SIGKILL; a new process in its place at once."""
    log = KillLog()
    for round_no in range(ROUNDS):
        await asyncio.sleep(rng.uniform(*PAUSE_S))
        slot = rng.randrange(len(slots))
        victim = slots[slot]
        assert victim.alive, f"round {round_no}: {victim.name} died by itself\n{victim.output()}"
        aim = rng.random() < AIM_AT_BATCH
        deadline = time.monotonic() + (MID_BATCH_WAIT_S if aim else 0)
        mid = False
        while time.monotonic() < deadline:
            if await in_transaction(engine, victim):
                mid = True
                break
            await asyncio.sleep(0.002)
        if mid:
            await asyncio.sleep(rng.uniform(0, 0.01))  # anywhere in the batch, or just after its commit
        assert await victim.kill() == -9
        log.mid_batch += mid
        log.between += not mid
        when = "mid-batch" if mid else ("between batches (waited in vain)" if aim else "at a random moment")
        log.lines.append(f"round {round_no}: killed {victim.name} {when}")
        slots[slot] = pool.start(s, f"joiner{slot}-{round_no}")
    return log


# -- the reference --------------------------------------------------------------------------------


def evidence(event: EventRecord) -> Evidence:
    assert event.occurred_at is not None
    return Evidence(event.event_id, event.type, event.occurred_at, event.value, event.actor)


def counted(policy: UseCasePolicy, served: datetime, produced: list[EventRecord]) -> list[EventRecord]:
    """The events that count by their event time: occurred by the seal."""
    seal = deadlines(policy, served).seal_at
    return [e for e in produced if e.occurred_at is not None and e.occurred_at <= seal]


def decision_row(decision: Decision) -> tuple[Any, ...]:
    return (decision.label, decision.kind.value, decision.rule, [source_json(s) for s in decision.sources])


def history_problem(policy: UseCasePolicy, served: datetime, produced: list[EventRecord], history: list[Any]) -> str:
    """Why this label history is not one the workload allows ('' when it is)."""
    signals = counted(policy, served, produced)
    prefixes = [
        resolve(policy, served, [evidence(e) for e in signals[:n]], window_closed=False)
        for n in range(1, 1 + len(signals))
    ]
    allowed = [decision_row(d) for d in prefixes if d is not None]
    final = resolve(policy, served, [evidence(e) for e in signals], window_closed=True)
    assert final is not None
    expected_final = decision_row(final)
    if not signals:
        allowed.append(expected_final)  # the implicit negative, provisional from the window's close
    found = [(r.revision, r.status, (r.label, r.kind, r.rule, r.sources)) for r in history]
    if not found or found[-1][1] != "final" or [f for f in found if f[1] == "final"] != found[-1:]:
        return f"not exactly one final row, last: {found}"
    if found[-1][2] != expected_final:
        return f"final {found[-1][2]}, expected {expected_final}"
    provisional = found[:-1]
    if signals and not provisional:
        return f"a label from events without a provisional row: {found}"
    if [rev for rev, _, _ in provisional] != list(range(len(provisional))):
        return f"revisions not 0, 1, ...: {found}"
    if found[-1][0] != max(len(provisional) - 1, 0):
        return f"the final row's revision is not the last one: {found}"
    position = -1
    for _, _, row in provisional:
        if row not in allowed or allowed.index(row) <= position:
            return f"a provisional label no prefix of the events resolves to (in order): {row} in {found}"
        position = allowed.index(row)
    if signals and provisional[-1][2] != expected_final:
        return f"labeled from events, the last provisional label differs from the final one: {found}"
    return ""


# -- the test -------------------------------------------------------------------------------------


async def test_kill_loop_under_load_ends_with_the_labels_of_the_workload(
    kafka_settings: Settings, kafka_client: httpx.AsyncClient, pg_engine: AsyncEngine, tmp_path: Path
) -> None:
    # A shorter session than the other tests': a dead member leaves the group sooner, so more
    # rounds fit in the time and more of them find the group consuming.
    s = kafka_settings.model_copy(update={"kafka_max_records": 500, "kafka_session_timeout": timedelta(seconds=3)})
    policy = load_policies(s.policies).use_cases["recsys"]
    rng = random.Random(SEED)
    started = time.monotonic()
    run = f"seed {SEED}, {ROUNDS} rounds"

    with consumer_processes(tmp_path / "consumers") as pool:
        slots = [pool.start(s, "joiner0"), pool.start(s, "joiner1")]
        await wait_until(lambda: _both_assigned(slots), 40, "both joiners own partitions", diagnose=pool.output())
        async with plain_producer(s.kafka_bootstrap_servers or "") as producer:
            load = Load(s, producer)
            loading = asyncio.create_task(load.run())
            try:
                await asyncio.sleep(1.0)  # the load is flowing before the first kill
                kills = await kill_loop(pool, slots, s, pg_engine, rng)
            finally:
                load.stopping.set()
                await loading
        killed_at = time.monotonic()
        w = load.workload
        expected_events = sum(len(v) for v in w.events.values())

        async def all_final() -> bool:
            done = await rows(
                pg_engine,
                "SELECT (SELECT count(*) FROM predictions WHERE label_status = 'final'),"
                " (SELECT count(*) FROM events WHERE disposition IS NOT NULL)",
            )
            return tuple(done[0]) == (len(w.served), expected_events)

        diagnose = f"{run}\n" + "\n".join(kills.lines)
        await wait_until(all_final, 90, f"every label final ({run})", interval=0.5, diagnose=diagnose + pool.output())
        final_at = time.monotonic()
        for joiner in slots:
            assert joiner.alive, f"{run}\n{joiner.output()}"
            assert await joiner.terminate() == 0, f"{run}\n{joiner.output()}"
        assert "Traceback" not in pool.output(), f"{run}\n{pool.output()}"

    print(
        f"\n{run}: {kills.mid_batch} kills mid-batch, {kills.between} between batches; {w.waves} waves,"
        f" {len(w.served)} predictions, {expected_events} events, {w.messages} messages;"
        f" load and kills {killed_at - started:.1f} s, all final {final_at - killed_at:.1f} s later"
    )
    assert kills.mid_batch > 0, f"{run}: no kill landed inside a transaction\n" + "\n".join(kills.lines)

    # Every prediction's label as the core resolves the workload's events.
    async with pg_engine.connect() as conn:
        stored = {r.prediction_id: r for r in await conn.execute(select(predictions))}
        history: dict[str, list[Any]] = {}
        for r in await conn.execute(select(label_history).order_by(label_history.c.id)):
            history.setdefault(r.prediction_id, []).append(r)
        dispositions = {r.event_id: r.disposition for r in await conn.execute(select(events))}
    assert set(stored) == set(w.served), run
    wrong_labels, wrong_history, revised = [], [], 0
    by_kind: dict[str, int] = {}
    for pid, served in w.served.items():
        produced = w.events.get(pid, [])
        decision = resolve(policy, served, [evidence(e) for e in counted(policy, served, produced)], window_closed=True)
        assert decision is not None
        row = stored[pid]
        got = (row.label, row.label_kind, row.label_rule, row.label_sources, row.label_status)
        if got != (*decision_row(decision), "final"):
            wrong_labels.append(f"{pid}: {got}, expected {decision_row(decision)}")
        problem = history_problem(policy, served, produced, history.get(pid, []))
        if problem:
            wrong_history.append(f"{pid}: {problem}")
        last = history[pid][-1] if pid in history else None
        if last is None or (row.revision, row.seq) != (last.revision, last.seq):
            wrong_history.append(f"{pid}: revision and seq {row.revision, row.seq}, last history row {last}")
        revised += row.revision
        by_kind[decision.kind.value] = by_kind.get(decision.kind.value, 0) + 1
    assert wrong_labels == [], f"{run}: {len(wrong_labels)} wrong labels, first: {wrong_labels[:10]}"
    assert wrong_history == [], f"{run}: {len(wrong_history)} wrong histories, first: {wrong_history[:10]}"
    # Only a purchase and its return in different batches may revise a label, once.
    assert revised <= sum(1 for p in w.served if int(p.rsplit("-", 1)[1]) % 6 == 3), run
    seqs = [r.seq for rs in history.values() for r in rs]
    assert len(seqs) == len(set(seqs)), f"{run}: a dataset seq handed out twice"

    # Every event stored once, with the disposition its event time implies.
    seal = {pid: deadlines(policy, served).seal_at for pid, served in w.served.items()}
    expected_dispositions = {
        e.event_id: "counted" if e.occurred_at is not None and e.occurred_at <= seal[pid] else "too_late"
        for pid, evs in w.events.items()
        for e in evs
    }
    assert dispositions == expected_dispositions, run

    # Nothing counted twice: the counters, the figures and the dead letters are exact.
    late = sum(1 for d in expected_dispositions.values() if d == "too_late")
    expected_totals = {
        "served": len(w.served),
        "events": expected_events,
        "too_late": late,
        "finalized": len(w.served),
        "label_changes": revised,
        **{f"labels_{kind}": n for kind, n in by_kind.items()},
    }
    found_totals = await counters(pg_engine)
    assert {k: found_totals.get(k, 0) for k in expected_totals} == expected_totals, run
    for name in ("revisions", "clock_skew", "expired", "invalid_events", "orphans_expired"):
        assert found_totals.get(name, 0) == 0, f"{run}: {name} {found_totals}"
    figures = (await kafka_client.get("/v1/metrics/feedback-loop", params={"use_case": "recsys"})).json()
    recsys = figures["use_cases"]["recsys"]
    assert (recsys["served"], recsys["labeled"], recsys["pending"]) == (len(w.served),) * 2 + (0,), run
    assert sum(recsys["events"].values()) == expected_events, run
    assert sum(d["count"] for d in recsys["feedback_delay"].values()) == expected_events, run
    assert figures["dead_letters"] == w.poison, run
    assert await scalar(pg_engine, "SELECT count(*) FROM dead_letters") == w.poison, run
    # Dead letters reach their topic at least once each; nothing but the poison is one.
    dead = await read_topic(
        s.kafka_bootstrap_servers or "",
        s.kafka_dlq_topic,
        lambda m: len({header(x, "labelloop-source") for x in m}) >= w.poison,
    )
    assert len({header(m, "labelloop-source") for m in dead}) == w.poison, run
    assert {m.value for m in dead} == {POISON}, run


async def _both_assigned(slots: list[ConsumerProcess]) -> bool:
    return all(any(c.assignments()) for c in slots)
