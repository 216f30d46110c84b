"""A backfill: both topics full before the joiner starts. The broker hands out at most 1 MB a
partition per fetch: about 250 predictions of 4 kB (a quarter of a partition's serving time), but
every click of the partition at once (one click for every ten predictions). Per fetch, the clicks
run ahead of the predictions in event time.

Read as fetched, the joiner applies clicks before their predictions and stores them as orphans.
Read in step by event time (consumers/sync.py), no event is applied before its prediction, and
no record is applied twice."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.joiner import Batch, Joiner
from service.config import Settings
from service.store.ingest import PartitionReport, UnitResult
from tests.kafka.conftest import running_joiner
from tests.kafka.processes import click, keyed, plain_producer, prediction, scalar, send, wait_until

PREDICTIONS = 2000
CLICKS = PREDICTIONS // 10
BLOB = "x" * 4000


class RecordingJoiner(Joiner):
    """The real joiner, noting the order in which it applies records."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.applied: list[tuple[str, str]] = []  # ("prediction" | "event", prediction_id)

    async def _apply(self, batch: Batch, reports: dict[str, PartitionReport], all_partitions: list[str]) -> UnitResult:
        unit = await super()._apply(batch, reports, all_partitions)
        self.applied += [("prediction", p.prediction_id) for p, _ in batch.predictions]
        self.applied += [("event", e.prediction_id) for e, _ in batch.events]
        return unit


async def test_no_event_is_applied_before_its_prediction(kafka_settings: Settings, pg_engine: AsyncEngine) -> None:
    s = kafka_settings.model_copy(update={"kafka_max_records": 50})
    start = datetime.now(UTC) - timedelta(hours=1)
    served = {f"P{i}": start + i * timedelta(milliseconds=100) for i in range(PREDICTIONS)}
    clicked = list(served)[::10]
    async with plain_producer(s.kafka_bootstrap_servers or "") as producer:
        clicks = [click(f"E-{p}", p, served[p] + timedelta(milliseconds=50)) for p in clicked]
        await send(producer, s.kafka_events_topic, keyed(clicks))
        predictions = [replace(prediction(p, t), features={"blob": BLOB}) for p, t in served.items()]
        await send(producer, s.kafka_predictions_topic, keyed(predictions))

    async with running_joiner(s, RecordingJoiner) as joiner:

        async def all_counted() -> bool:
            return await scalar(pg_engine, "SELECT count(*) FROM events WHERE disposition = 'counted'") == CLICKS

        await wait_until(all_counted, 40, "every click joined", interval=0.3)
        assert joiner.metrics.registry.get_sample_value("labelloop_joiner_waiting_records") == 0

    assert isinstance(joiner, RecordingJoiner)
    applied_predictions: set[str] = set()
    early = []
    for kind, prediction_id in joiner.applied:
        if kind == "prediction":
            applied_predictions.add(prediction_id)
        elif prediction_id not in applied_predictions:
            early.append(prediction_id)
    assert early == []
    assert Counter(kind for kind, _ in joiner.applied) == {"prediction": PREDICTIONS, "event": CLICKS}
    assert await scalar(pg_engine, "SELECT count(*) FROM predictions WHERE label::text = '1'") == CLICKS
