"""A broker that refuses idempotent producers (Tansu answers InitProducerId with an error) stops the
API and the joiner at start-up with one clear error, instead of a 503 on every request."""

from __future__ import annotations

import asyncio

import pytest

from consumers.joiner import Joiner
from service.api.app import create_app
from service.config import Settings
from service.core.policy import load_policies
from service.kafka.errors import IdempotenceRefused
from service.store.database import Database, create_engine


@pytest.fixture
def idempotent(kafka_settings: Settings) -> Settings:
    return kafka_settings.model_copy(update={"kafka_idempotence": True})


async def test_the_api_refuses_to_start(idempotent: Settings) -> None:
    app = create_app(idempotent)
    with pytest.raises(IdempotenceRefused, match="set LABELLOOP_KAFKA_IDEMPOTENCE=false"):
        async with app.router.lifespan_context(app):
            pass


async def test_the_joiner_refuses_to_start(idempotent: Settings) -> None:
    engine = create_engine(idempotent.database_url, "labelloop-joiner-test")
    try:
        joiner = Joiner(idempotent, load_policies(idempotent.policies), Database(engine))
        with pytest.raises(IdempotenceRefused, match="refused an idempotent producer"):
            await asyncio.wait_for(joiner.run(asyncio.Event()), 30)
    finally:
        await engine.dispose()
