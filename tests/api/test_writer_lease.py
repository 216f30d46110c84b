"""The embedded API process is its store's only writer (it keeps open predictions in memory):
a second one, or a Kafka joiner beside it, refuses to start; joiners share the store. On SQLite
and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.store.lease import WriterConflict, writer_lease
from tests.conftest import FakeClock, settings_for


async def test_a_second_embedded_writer_refuses_to_start(
    app: FastAPI, migrated_url: str, policies_file: Path, clock: FakeClock
) -> None:
    second = create_app(settings_for(migrated_url, policies=policies_file), clock=clock)
    with pytest.raises(WriterConflict, match="one API process per database"):
        async with second.router.lifespan_context(second):
            pass


async def test_joiners_share_the_store_but_not_with_an_embedded_writer(app: FastAPI, engine: AsyncEngine) -> None:
    with pytest.raises(WriterConflict, match="embedded-mode labelloop serve is writing"):
        async with writer_lease(engine, exclusive=False):
            pass


async def test_joiners_share_and_the_lease_is_released(engine: AsyncEngine) -> None:
    async with writer_lease(engine, exclusive=False), writer_lease(engine, exclusive=False):
        with pytest.raises(WriterConflict, match="another process is writing"):
            async with writer_lease(engine, exclusive=True):
                pass
    async with writer_lease(engine, exclusive=True):  # both joiners gone: free again
        pass
