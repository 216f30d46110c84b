"""`labelloop consume`: one joiner process of the consumer group."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server

from consumers.joiner import Joiner
from service.config import Settings
from service.core.policy import load_policies
from service.store import migrate
from service.store.database import Database, create_engine
from service.store.lease import writer_lease

log = logging.getLogger(__name__)


async def consume(settings: Settings) -> None:
    policies = load_policies(settings.policies)
    engine = create_engine(settings.database_url, "labelloop-joiner", settings.timeouts)
    try:
        if settings.should_migrate_on_start:
            await migrate.upgrade(engine)
        joiner = Joiner(settings, policies, Database(engine))
        if settings.consumer_metrics_port:
            start_http_server(
                settings.consumer_metrics_port, addr=settings.consumer_metrics_host, registry=joiner.metrics.registry
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "joining %s and %s as group %s",
            settings.kafka_predictions_topic,
            settings.kafka_events_topic,
            settings.kafka_group_id,
        )
        async with writer_lease(engine, exclusive=False):  # never beside an embedded-mode writer
            await joiner.run(stop)
    finally:
        await engine.dispose()
