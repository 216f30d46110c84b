"""A relabel never reopens what the live path closed because the watermark it reads now is lower
than the one that closed it (Kafka joiners stopped, a partition quiet past the owner timeout, or
no partition reported at all): under the same policy it changes nothing."""

from __future__ import annotations

from datetime import timedelta

import httpx

from service.api.runtime import Runtime
from service.store.relabel import relabel
from tests.conftest import T0, FakeClock
from tests.helpers import MIN, Timeline

TOPICS = ("labelloop.predictions", "labelloop.events")  # no partition of theirs ever reported


async def test_the_same_policy_with_no_watermark_reopens_nothing(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    t = Timeline(client, runtime, clock)
    await t.predict("final", T0)
    await t.event("final", "click", T0 + MIN)
    await t.predict("closed", T0 + 3 * timedelta(hours=1))
    await t.advance_watermark(T0 + 3 * timedelta(hours=1) + 11 * MIN)  # past final's seal, closed's window
    before = {pid: (await t.lineage(pid))["label"] for pid in ("final", "closed")}
    assert [before[p]["status"] for p in ("final", "closed")] == ["final", "provisional"]

    report = await relabel(runtime.db, runtime.context, "recsys", kafka_topics=TOPICS)

    assert (report.scanned, report.revised, report.status_only, report.open) == (2, 0, 0, 0)
    assert {pid: (await t.lineage(pid))["label"] for pid in ("final", "closed")} == before
