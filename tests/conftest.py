"""Shared fixtures: real SQLite and PostgreSQL databases built by the migrations, a settable clock,
and an API client over the ASGI transport."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.api.runtime import Runtime
from service.config import Settings
from service.core.policy import BUNDLED_POLICIES
from service.store import migrate
from service.store.database import create_engine
from service.store.tables import metadata

PG_ADMIN_DSN = os.environ.get("LABELLOOP_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


class FakeClock:
    """The wall clock as tests set it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> None:
        self.now = now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _admin(statement: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def _migrate(url: str) -> None:
    engine = create_engine(url, application_name="labelloop-tests")
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


# Session fixtures that do async work run it to completion with asyncio.run: they are set up
# outside the tests' event loop, so they stay usable from any test.


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of our own on the local server, created and dropped by this session.
    No server is a failure, never a skip."""
    name = f"labelloop_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "labelloop.db"
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def migrated_url(request: pytest.FixtureRequest) -> str:
    """Each storage test runs on both engines; the schema comes from the migrations."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    asyncio.run(_migrate(url))
    return url


async def _truncate(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(table.delete())


@pytest.fixture
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on an emptied database."""
    engine = create_engine(migrated_url, application_name="labelloop-tests")
    await _truncate(engine)
    yield engine
    await engine.dispose()


def settings_for(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "migrate_on_start": False,
        "sweep_interval": timedelta(hours=1),  # tests tick by hand
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def policies_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled policies plus variants the timelines need: majority vote and late policy ignore."""
    policies = yaml.safe_load(BUNDLED_POLICIES.read_text())
    recsys = policies["use_cases"]["recsys"]
    policies["use_cases"]["recsys_majority"] = {**recsys, "explicit_resolution": "majority"}
    policies["use_cases"]["recsys_ignore"] = {**recsys, "late_policy": "ignore"}
    path: Path = tmp_path_factory.mktemp("policies") / "policies.yaml"
    path.write_text(yaml.safe_dump(policies))
    return path


@pytest.fixture
async def app(engine: AsyncEngine, migrated_url: str, clock: FakeClock, policies_file: Path) -> AsyncIterator[FastAPI]:
    app = create_app(settings_for(migrated_url, policies=policies_file), clock=clock)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://labelloop.test") as client:
        yield client
