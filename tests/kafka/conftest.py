"""Kafka fixtures: one Tansu broker per session, fresh topics and group per test, PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.joiner import Joiner
from service.api.app import create_app
from service.config import Settings
from service.core.policy import BUNDLED_POLICIES, load_policies
from service.store.database import Database, create_engine
from tests.conftest import _migrate, _truncate
from tests.kafka.broker import Broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(log_dir=tmp_path_factory.mktemp("tansu"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """recsys with windows short enough to watch them close: 2 s window, 2 s allowed lateness."""
    policies = yaml.safe_load(BUNDLED_POLICIES.read_text())
    policies["use_cases"]["recsys"].update(window="2s", allowed_lateness="2s")
    path: Path = tmp_path_factory.mktemp("kafka-policies") / "policies.yaml"
    path.write_text(yaml.safe_dump(policies))
    return path


@pytest.fixture(scope="session")
def pg_url(postgres_url: str) -> str:
    asyncio.run(_migrate(postgres_url))
    return postgres_url


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_url, application_name="labelloop-kafka-tests")
    await _truncate(engine)
    yield engine
    await engine.dispose()


def kafka_settings_for(bootstrap: str, database_url: str, policies: Path, **overrides: object) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "database_url": database_url,
        "policies": policies,
        "migrate_on_start": False,
        "kafka_bootstrap_servers": bootstrap,
        "kafka_predictions_topic": f"predictions-{suffix}",
        "kafka_events_topic": f"events-{suffix}",
        "kafka_dlq_topic": f"dlq-{suffix}",
        "kafka_group_id": f"joiner-{suffix}",
        "kafka_partitions": 4,
        # Tansu answers InitProducerId with an error: no idempotent producer against it. The
        # joiner's unique keys make redelivered duplicates harmless either way.
        "kafka_idempotence": False,
        "kafka_session_timeout": timedelta(seconds=6),  # a group forms in seconds on Tansu
        "kafka_produce_timeout": timedelta(seconds=5),
        "idle_timeout": timedelta(seconds=1),
        "allowed_disorder": timedelta(milliseconds=200),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def kafka_settings(broker: Broker, pg_url: str, pg_engine: AsyncEngine, kafka_policies: Path) -> Settings:
    return kafka_settings_for(broker.bootstrap, pg_url, kafka_policies)


@pytest.fixture
async def kafka_app(kafka_settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(kafka_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def kafka_client(kafka_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=kafka_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://labelloop.test") as client:
        yield client


@contextlib.asynccontextmanager
async def running_joiner(settings: Settings, joiner_class: type[Joiner] = Joiner) -> AsyncIterator[Joiner]:
    """A joiner in this process, stopped cleanly at the end."""
    engine = create_engine(settings.database_url, application_name="labelloop-joiner-test")
    joiner = joiner_class(settings, load_policies(settings.policies), Database(engine))
    stop = asyncio.Event()
    task = asyncio.create_task(joiner.run(stop))
    try:
        yield joiner
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            await engine.dispose()
