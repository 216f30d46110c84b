"""The migrations build exactly the schema the code queries, and downgrade cleanly."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.migrate import alembic_config
from service.store.tables import metadata


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrated_schema_matches_tables(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def test_downgrade_and_upgrade_again(engine: AsyncEngine) -> None:
    def cycle(connection: Connection) -> tuple[set[str], set[str]]:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        after_downgrade = set(inspect(connection).get_table_names()) - {"alembic_version"}
        command.upgrade(config, "head")
        return after_downgrade, set(inspect(connection).get_table_names())

    async with engine.begin() as conn:
        emptied, rebuilt = await conn.run_sync(cycle)
    assert emptied == set()
    assert rebuilt >= set(metadata.tables)


async def test_constraint_names_are_stable(engine: AsyncEngine) -> None:
    def names(connection: Connection) -> tuple[str | None, list[str]]:
        inspector = inspect(connection)
        pk = inspector.get_pk_constraint("predictions")["name"]
        indexes = sorted(str(ix["name"]) for ix in inspector.get_indexes("predictions"))
        return pk, indexes

    async with engine.connect() as conn:
        pk, indexes = await conn.run_sync(names)
    assert "ix_predictions_deadline" in indexes
    assert "ix_predictions_use_case_seq" in indexes
    if engine.dialect.name == "postgresql":  # SQLite does not keep primary key names
        assert pk == "pk_predictions"


async def test_daily_delay_histograms_are_rolled_up_from_the_hours_already_counted(engine: AsyncEngine) -> None:
    def migrate_with_history(connection: Connection) -> list[Any]:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
        connection.execute(
            text(
                "INSERT INTO delay_buckets (use_case, event_type, served_hour, bucket, count) VALUES"
                " ('recsys', 'click', 47, 3, 1), ('recsys', 'click', 48, 3, 2), ('recsys', 'click', 71, 3, 4),"
                " ('recsys', 'click', 71, 5, 8), ('eta', 'trip_completed', 48, 3, 16)"
            )
        )
        command.upgrade(config, "head")
        return list(connection.execute(text("SELECT * FROM delay_buckets_daily ORDER BY 1, 2, 3, 4")))

    async with engine.begin() as conn:
        daily = await conn.run_sync(migrate_with_history)
    assert [tuple(row) for row in daily] == [
        ("eta", "trip_completed", 2, 3, 16),
        ("recsys", "click", 1, 3, 1),
        ("recsys", "click", 2, 3, 6),
        ("recsys", "click", 2, 5, 8),
    ]
