"""The installed `labelloop` command: help, `migrate` and `purge` against a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import yaml

from service.core.policy import BUNDLED_POLICIES
from service.store.tables import metadata
from tests.conftest import PG_ADMIN_DSN
from tests.e2e._process import clean_env, labelloop_command

pytestmark = pytest.mark.postgres

CLI_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(*args: str, cwd: Path, **labelloop: str) -> Completed:
    process = await asyncio.create_subprocess_exec(
        *labelloop_command(),
        *args,
        cwd=cwd,
        env=clean_env(**labelloop),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    assert process.returncode is not None
    return Completed(process.returncode, stdout.decode(), stderr.decode())


@dataclass(frozen=True)
class Database:
    dsn: str  # for asyncpg
    url: str  # for labelloop (SQLAlchemy, asyncpg driver)


@pytest.fixture
async def throwaway_db() -> AsyncIterator[Database]:
    """An empty database of this test's own, dropped afterwards. No server is a failure."""
    name = f"labelloop_e2e_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    try:
        yield Database(dsn=dsn, url=dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def _alembic_versions(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["version_num"] for r in await conn.fetch("SELECT version_num FROM alembic_version")]
    finally:
        await conn.close()


async def test_help_lists_commands(tmp_path: Path) -> None:
    result = await run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout
    assert "migrate" in result.stdout
    assert "simulate" in result.stdout
    assert "LABELLOOP_" in result.stdout


async def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = await run_cli(cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: labelloop" in result.stderr


async def test_migrate_creates_schema_and_is_idempotent(tmp_path: Path, throwaway_db: Database) -> None:
    assert await _tables(throwaway_db.dsn) == set()

    first = await run_cli("migrate", cwd=tmp_path, database_url=throwaway_db.url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "to head" in first.stdout
    tables = await _tables(throwaway_db.dsn)
    assert "predictions" in tables
    assert "alembic_version" in tables
    assert set(metadata.tables) <= tables  # every table the service uses
    versions = await _alembic_versions(throwaway_db.dsn)
    assert len(versions) == 1

    second = await run_cli("migrate", cwd=tmp_path, database_url=throwaway_db.url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert await _tables(throwaway_db.dsn) == tables
    assert await _alembic_versions(throwaway_db.dsn) == versions


async def test_migrate_refuses_invalid_policy_file(tmp_path: Path, throwaway_db: Database) -> None:
    bad = tmp_path / "policies.yaml"
    bad.write_text("version: 1\nuse_cases:\n  recsys:\n    task: binary\n    window: soon\n    events: {}\n")
    result = await run_cli("migrate", cwd=tmp_path, database_url=throwaway_db.url, policies=str(bad))
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(bad) in result.stderr
    assert await _tables(throwaway_db.dsn) == set()  # nothing was migrated


async def test_purge_deletes_what_retention_let_expire(tmp_path: Path, throwaway_db: Database) -> None:
    policies = yaml.safe_load(BUNDLED_POLICIES.read_text())
    policies["use_cases"]["recsys"]["retention"] = "30d"
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(yaml.safe_dump(policies))
    env = {"database_url": throwaway_db.url, "policies": str(policy_file)}
    assert (await run_cli("migrate", cwd=tmp_path, **env)).returncode == 0
    conn = await asyncpg.connect(throwaway_db.dsn)
    try:
        now = datetime.now(UTC)
        for pid, age, phase in (("old", 40, "final"), ("recent", 1, "final"), ("old-open", 40, "closed")):
            served = now - timedelta(days=age)
            await conn.execute(
                "INSERT INTO predictions (prediction_id, use_case, served_at, content_hash, received_at,"
                " window_end, seal_at, phase) VALUES ($1, 'recsys', $2, 'h', $2, $2, $2, $3)",
                pid,
                served,
                phase,
            )

        dry = await run_cli("purge", "--dry-run", cwd=tmp_path, **env)
        assert dry.returncode == 0, dry.stderr
        assert "recsys: 1 predictions served before" in dry.stdout
        assert await conn.fetchval("SELECT count(*) FROM predictions") == 3

        purged = await run_cli("purge", cwd=tmp_path, **env)
        assert purged.returncode == 0, purged.stderr
        assert "recsys: purged 1 predictions" in purged.stdout
        kept = {r["prediction_id"] for r in await conn.fetch("SELECT prediction_id FROM predictions")}
        assert kept == {"recent", "old-open"}  # a label not final yet is never purged
        audit = await conn.fetch("SELECT kind, requested_by, predictions FROM erasures")
        assert [tuple(a) for a in audit] == [("retention", "cli", 1)]
    finally:
        await conn.close()

    none = await run_cli("purge", cwd=tmp_path, database_url=throwaway_db.url)
    assert (none.returncode, none.stdout.strip()) == (0, "no use case has a retention: nothing to purge")
