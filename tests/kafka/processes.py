"""`labelloop consume` as real processes, plus the small helpers the Kafka stream tests share:
producing records as another service would, reading the dead-letter topic, counting what the
joiners stored, and bounded polling."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.core.model import EventRecord, PredictionRecord
from service.kafka.codec import encode
from tests.e2e._process import clean_env, labelloop_command

T = TypeVar("T")

# -- settings as the environment of a process --------------------------------------------------


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return f"{value.total_seconds() * 1000:.0f}ms"
    return str(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """The LABELLOOP_* variables (without the prefix) that make a process read these settings."""
    env = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is not None:
            env[name] = _env_value(value)
    return env


# -- consumer processes --------------------------------------------------------------------------


@dataclass
class ConsumerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return f"--- {self.name} ({self.log}) ---\n{self.log.read_text(errors='replace')}"

    def lines(self) -> list[dict[str, Any]]:
        """The log's JSON lines (a line cut off by a kill is left out)."""
        parsed = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed.append(orjson.loads(line))
        return parsed

    def assignments(self) -> list[list[str]]:
        """Every assignment the joiner logged ('topic:partition'), in order."""
        return [
            ast.literal_eval(line["msg"].removeprefix("assigned "))
            for line in self.lines()
            if line.get("logger") == "consumers.joiner" and line.get("msg", "").startswith("assigned ")
        ]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    async def wait_exit(self, within: float) -> int | None:
        """The exit code, or None when it is still running after `within` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)
        return self.process.poll()

    async def terminate(self, within: float = 20) -> int:
        """SIGTERM, the joiner's clean stop; fails the test when it does not exit in time."""
        self.process.send_signal(signal.SIGTERM)
        code = await self.wait_exit(within)
        if code is None:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"{self.name} ignored SIGTERM for {within} s\n{self.output()}")
        return code

    async def kill(self) -> int:
        """SIGKILL: no clean-up of any kind, as a crash or an OOM kill."""
        self.process.send_signal(signal.SIGKILL)
        code = await self.wait_exit(10)
        assert code is not None, f"{self.name} survived SIGKILL"
        return code

    async def wait_for_log(self, needle: str, within: float, after: int = 0) -> int:
        """Wait until the log holds `needle` (searching from character `after`); where it is."""
        deadline = time.monotonic() + within
        while True:
            found = self.log.read_text(errors="replace").find(needle, after)
            if found >= 0:
                return found
            if not self.alive:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} in {self.name}'s log within {within} s\n{self.output()}")
            await asyncio.sleep(0.1)


@dataclass
class ConsumerPool:
    """Starts `labelloop consume` processes; every one is stopped and reaped on exit."""

    workdir: Path
    started: list[ConsumerProcess] = field(default_factory=list)

    def start(self, settings: Settings, name: str | None = None) -> ConsumerProcess:
        name = name or f"consumer-{len(self.started) + 1}"
        log_path = self.workdir / f"{name}.log"
        env = clean_env(**settings_env(settings))
        env["PYTHONUNBUFFERED"] = "1"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [*labelloop_command(), "consume"],
                cwd=self.workdir,  # no stray .env
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        consumer = ConsumerProcess(name, process, log_path)
        self.started.append(consumer)
        return consumer

    def output(self) -> str:
        return "\n".join(c.output() for c in self.started)

    def close(self) -> None:
        for consumer in self.started:
            if consumer.process.poll() is None:
                consumer.process.terminate()
        for consumer in self.started:
            try:
                consumer.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                consumer.process.kill()
                consumer.process.wait(timeout=10)


@contextlib.contextmanager
def consumer_processes(workdir: Path) -> Iterator[ConsumerPool]:
    workdir.mkdir(parents=True, exist_ok=True)
    pool = ConsumerPool(workdir)
    try:
        yield pool
    finally:
        pool.close()


# -- producing as another service would ----------------------------------------------------------


def prediction(prediction_id: str, served_at: datetime, use_case: str = "recsys") -> PredictionRecord:
    return PredictionRecord(prediction_id=prediction_id, use_case=use_case, served_at=served_at)


def click(event_id: str, prediction_id: str, occurred_at: datetime, type: str = "click") -> EventRecord:
    return EventRecord(event_id=event_id, prediction_id=prediction_id, type=type, occurred_at=occurred_at)


# (key, value, explicit partition or None for the key's partition)
Outgoing = tuple[bytes | None, bytes | None, int | None]


def keyed(records: Sequence[PredictionRecord | EventRecord]) -> list[Outgoing]:
    """Contract messages: the prediction_id as key, codec.encode as value."""
    return [(r.prediction_id.encode(), encode(r), None) for r in records]


@contextlib.asynccontextmanager
async def plain_producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def send(producer: AIOKafkaProducer, topic: str, messages: Sequence[Outgoing]) -> list[Any]:
    """Send and wait for every acknowledgement; the record metadata of each message."""
    futures = [await producer.send(topic, value=value, key=key, partition=p) for key, value, p in messages]
    return list(await asyncio.gather(*futures))


async def produce(bootstrap: str, topic: str, messages: Sequence[Outgoing]) -> list[Any]:
    async with plain_producer(bootstrap) as producer:
        return await send(producer, topic, messages)


async def read_topic(
    bootstrap: str, topic: str, enough: int | Callable[[list[Any]], bool], deadline_s: float = 20
) -> list[Any]:
    """Messages of every partition of `topic` from offset 0 (no ListOffsets), until there are
    `enough` of them (a count, or a predicate on the list)."""
    done = enough if callable(enough) else (lambda received: len(received) >= enough)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + deadline_s
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            assert time.monotonic() < deadline, f"no metadata for {topic}"
            await asyncio.sleep(0.2)
            await consumer.topics()  # a metadata refresh
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        received: list[Any] = []
        while not done(received):
            assert time.monotonic() < deadline, f"{len(received)} messages in {topic} after {deadline_s} s: not enough"
            batch = await consumer.getmany(timeout_ms=300)
            for messages in batch.values():
                received.extend(messages)
        return received
    finally:
        await consumer.stop()


def header(message: Any, name: str) -> str | None:
    for key, value in message.headers or ():
        if key == name:
            text_value: str = value.decode()
            return text_value
    return None


# -- polling and reading the store ---------------------------------------------------------------


async def wait_until(
    check: Callable[[], Awaitable[T]], within: float, what: str, interval: float = 0.2, diagnose: str = ""
) -> T:
    """Poll `check` until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s (last: {result!r})\n{diagnose}")
        await asyncio.sleep(interval)


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(sql), params))


async def final_label_mix(engine: AsyncEngine) -> dict[tuple[str, Any], int]:
    """(label_kind, label) -> how many predictions have that final label."""
    found = await rows(
        engine,
        "SELECT label_kind, label::text, count(*) FROM predictions WHERE label_status = 'final'"
        " GROUP BY label_kind, label::text",
    )
    return {(kind, int(label)): n for kind, label, n in found}


async def counters(engine: AsyncEngine) -> dict[str, int]:
    """stat_counters summed by name over use cases, event types and hours."""
    found = await rows(engine, "SELECT name, sum(value) FROM stat_counters GROUP BY name")
    return {name: int(total) for name, total in found}


async def history_problems(engine: AsyncEngine) -> list[Any]:
    """Label-history rows beyond what the rules imply for labels that never change: any revision
    other than 0, or a prediction with more than one row of the same status."""
    revised = await rows(engine, "SELECT prediction_id, revision FROM label_history WHERE revision <> 0 LIMIT 10")
    repeated = await rows(
        engine,
        "SELECT prediction_id, status, count(*) FROM label_history GROUP BY prediction_id, status"
        " HAVING count(*) > 1 LIMIT 10",
    )
    return revised + repeated


async def assert_exact_figures(client: Any, predictions: int, clicks: int) -> dict[str, Any]:
    """The feedback-loop figures of a run where `clicks` of `predictions` were clicked in their
    window and every window has closed and sealed: each record counted exactly once."""
    figures: dict[str, Any] = (await client.get("/v1/metrics/feedback-loop", params={"use_case": "recsys"})).json()
    recsys: dict[str, Any] = figures["use_cases"]["recsys"]
    assert recsys["served"] == predictions
    assert recsys["labeled"] == predictions
    assert recsys["pending"] == 0
    negatives = predictions - clicks
    assert recsys["labels_by_kind"] == {
        "explicit": 0,
        "behavioral": clicks,
        "natural": 0,
        "implicit_negative": negatives,
    }
    assert recsys["events"] == {"click": clicks}
    assert recsys["feedback_delay"]["click"]["count"] == clicks
    assert recsys["revisions"] == 0
    return recsys
