"""The watermark a relabel closes windows by, read from the store: the embedded writer's (the wall
clock once the stream is idle), or in Kafka mode the slowest partition's, as the joiners take it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.policy import BUNDLED_POLICIES, load_policies
from service.core.windows import PartitionProgress, WatermarkState
from service.store import watermarks
from service.store.ingest import EMBEDDED_WATERMARK, LabelContext
from service.store.relabel import current_watermark
from tests.conftest import T0

SECOND = timedelta(seconds=1)
TOPICS = ("labelloop.predictions", "labelloop.events")
CTX = LabelContext(load_policies(BUNDLED_POLICIES), 5 * SECOND, 5 * SECOND, timedelta(hours=24))


def seen(newest: timedelta, arrived: timedelta, caught_up: bool = False) -> PartitionProgress:
    return PartitionProgress(WatermarkState(T0 + newest, T0 + arrived), caught_up, T0 + arrived)


async def test_the_embedded_watermark_follows_events_then_the_idle_clock(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await current_watermark(conn, CTX, T0, kafka_topics=None) == T0 - 5 * SECOND  # nothing yet: the clock
        await watermarks.save(conn, {EMBEDDED_WATERMARK: seen(-60 * SECOND, 0 * SECOND)})
        assert await current_watermark(conn, CTX, T0 + SECOND, kafka_topics=None) == T0 - 65 * SECOND  # not idle
        assert await current_watermark(conn, CTX, T0 + 10 * SECOND, kafka_topics=None) == T0 + 5 * SECOND  # idle


async def test_in_kafka_mode_the_slowest_partition_decides(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await watermarks.save(
            conn,
            {
                EMBEDDED_WATERMARK: seen(0 * SECOND, 0 * SECOND),  # an embedded past: not a partition
                "labelloop.events:0": seen(-30 * SECOND, 0 * SECOND),
                "labelloop.predictions:0": seen(-90 * SECOND, 0 * SECOND),
                "retired.topic:0": seen(-900 * SECOND, 0 * SECOND),  # no longer consumed: left out
            },
        )
        assert await current_watermark(conn, CTX, T0 + SECOND, kafka_topics=TOPICS) == T0 - 95 * SECOND
