"""A joiner's caught-up report is dated when it looked at the partition's end, not when its
transaction ran: a transaction retried seconds later must not claim that nothing arrived meanwhile
(the idle watermark of a caught-up partition follows its report's time)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.policy import BUNDLED_POLICIES, load_policies
from service.core.windows import PartitionProgress, WatermarkState
from service.store import watermarks
from service.store.ingest import LabelContext, PartitionReport, Submission, ingest_partitions
from tests.conftest import T0

SECOND = timedelta(seconds=1)
CTX = LabelContext(load_policies(BUNDLED_POLICIES), 5 * SECOND, 5 * SECOND, timedelta(hours=24))
PARTITION = "labelloop.events:0"


async def test_a_retried_transaction_keeps_the_time_the_partition_was_looked_at(engine: AsyncEngine) -> None:
    looked_at, retried_at = T0, T0 + 8 * SECOND
    quiet = PartitionProgress(WatermarkState(T0 - 60 * SECOND, T0 - 60 * SECOND), True, T0 - 60 * SECOND)
    report = PartitionReport(event_times=[], caught_up=True, looked_at=looked_at)  # nothing new
    async with engine.begin() as conn:
        await watermarks.save(conn, {PARTITION: quiet})
        unit = await ingest_partitions(conn, CTX, retried_at, {PARTITION: report}, [PARTITION], Submission())
        stored = await watermarks.load(conn, [PARTITION])
    assert stored[PARTITION].reported_at == looked_at
    assert stored[PARTITION].caught_up
    # Quiet for a minute and caught up as of T0: the wall clock stands in up to T0 (less the allowed
    # disorder), not up to the retry's T0 + 8 s, by when records may have arrived unread.
    assert unit.watermark == looked_at - CTX.allowed_disorder
