"""The FastAPI application factory; the lifespan builds the engine and the window sweeper."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import errors
from service.api.routes import ingest, ops, reads
from service.api.runtime import Runtime
from service.clock import Clock, utcnow
from service.config import Settings
from service.core.policy import load_policies
from service.store import migrate
from service.store.database import Database, create_engine
from service.store.lease import writer_lease


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(settings: Settings | None = None, clock: Clock = utcnow) -> FastAPI:
    settings = settings or Settings()
    policies = load_policies(settings.policies)  # an invalid file stops start-up here

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url, application_name="labelloop-api")
        if settings.should_migrate_on_start:
            await migrate.upgrade(engine)
        runtime = Runtime(settings=settings, policies=policies, db=Database(engine), clock=clock)
        app.state.runtime = runtime
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(runtime.db.dispose)
            if settings.kafka_mode:
                # Windows are closed by the joiners (`labelloop consume`); this process only produces.
                # Imported here: the embedded mode never loads the Kafka client.
                from service.api.kafka_sink import KafkaSink

                runtime.sink = await stack.enter_async_context(KafkaSink.started(settings, policies, runtime))
            else:
                await stack.enter_async_context(writer_lease(engine, exclusive=True))
                ticker = asyncio.create_task(runtime.run_ticker(), name="labelloop-window-sweep")
                stack.push_async_callback(_cancel, ticker)
            yield

    app = FastAPI(
        title="labelloop",
        version="0.1.0",
        summary="Joins served predictions with later events into training labels.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(ingest.router)
    app.include_router(reads.router)
    app.include_router(ops.router)
    return app
