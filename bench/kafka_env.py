"""A broker, a scratch PostgreSQL database and topics for one benchmark run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.data import Workload
from service.config import Settings
from service.kafka.codec import encode
from service.kafka.topics import ensure_topics
from service.store import migrate
from service.store.database import create_engine
from service.store.tables import metadata
from tests.kafka.broker import Broker
from tests.kafka.processes import settings_env as variables

# Every table of the store, from the schema itself: a hand-written list misses the next new table.
ALL_TABLES = ", ".join(table.name for table in metadata.sorted_tables)
ADMIN_DSN = os.environ.get("LABELLOOP_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class BenchEnv:
    broker: Broker
    dsn: str  # asyncpg
    url: str  # SQLAlchemy

    def settings(self, **overrides: object) -> Settings:
        suffix = uuid.uuid4().hex[:8]
        values: dict[str, object] = {
            "database_url": self.url,
            "migrate_on_start": False,
            "kafka_bootstrap_servers": self.broker.bootstrap,
            "kafka_predictions_topic": f"bench-predictions-{suffix}",
            "kafka_events_topic": f"bench-events-{suffix}",
            "kafka_dlq_topic": f"bench-dlq-{suffix}",
            "kafka_group_id": f"bench-joiner-{suffix}",
            "kafka_partitions": 4,
            "kafka_idempotence": False,  # Tansu has no InitProducerId
            "kafka_session_timeout": timedelta(seconds=6),
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def bench_env() -> AsyncIterator[BenchEnv]:
    name = f"labelloop_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base = ADMIN_DSN.rsplit("/", 1)[0]
    env = BenchEnv(Broker(), f"{base}/{name}", f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://"))
    env.broker.start()
    try:
        engine = create_engine(env.url, application_name="labelloop-bench")
        await migrate.upgrade(engine)
        await engine.dispose()
        yield env
    finally:
        env.broker.stop()
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def preload(settings: Settings, work: Workload) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=20, max_batch_size=1 << 20, acks="all"
    )
    await producer.start()
    try:
        pending = []
        for topic, records in (
            (settings.kafka_predictions_topic, work.predictions),
            (settings.kafka_events_topic, sorted(work.events, key=lambda e: e.occurred_at)),  # type: ignore[arg-type, return-value]
        ):
            for record in records:
                pending.append(await producer.send(topic, encode(record), key=record.prediction_id.encode()))
                if len(pending) >= 20_000:
                    await asyncio.gather(*pending)
                    pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment of a process that reads exactly these settings: ours, less LABELLOOP_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    env.update({f"LABELLOOP_{name.upper()}": value for name, value in variables(settings).items()})
    return env


def topics_consumer(settings: Settings, group_prefix: str) -> AIOKafkaConsumer:
    """A consumer of both topics from the start, in a group of its own."""
    return AIOKafkaConsumer(
        settings.kafka_predictions_topic,
        settings.kafka_events_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"{group_prefix}-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
    )


def start_consumer(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", "consume"],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
