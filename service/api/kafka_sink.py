"""Kafka mode: validate exactly as the embedded mode does, then produce keyed by prediction_id and
answer only once the broker acknowledged every record. Concurrent requests share one lookup of
their predictions' use cases and one produce batch (group commit)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from service.api.group_commit import GroupCommit, group_bounds
from service.api.runtime import Runtime
from service.api.sinks import Receipt
from service.config import Settings
from service.core.model import EventRecord, PredictionRecord
from service.core.policy import PolicySet
from service.core.validation import InvalidRecord, check_event, check_prediction
from service.kafka.codec import encode
from service.kafka.producer import Message, RecordProducer
from service.kafka.topics import ensure_topics
from service.store import lineage
from service.store.ingest import Submission

READY_TIMEOUT_S = 2.0  # a readiness probe's metadata request


class KafkaSink:
    def __init__(self, settings: Settings, policies: PolicySet, runtime: Runtime, producer: RecordProducer) -> None:
        self.settings = settings
        self.policies = policies
        self.runtime = runtime
        self.producer = producer
        self._group: GroupCommit[Submission, Receipt] = GroupCommit(
            self._produce, size=lambda s: s.size, bounds=group_bounds(settings)
        )

    @classmethod
    @asynccontextmanager
    async def started(cls, settings: Settings, policies: PolicySet, runtime: Runtime) -> AsyncIterator[KafkaSink]:
        await ensure_topics(settings)
        producer = RecordProducer(settings, client_id="labelloop-api")
        try:
            await producer.check()
            yield cls(settings, policies, runtime, producer)
        finally:
            await producer.stop()

    async def fault(self) -> str | None:
        topics = (self.settings.kafka_predictions_topic, self.settings.kafka_events_topic)
        return await self.producer.fault(topics, READY_TIMEOUT_S)

    async def put_predictions(self, records: Sequence[PredictionRecord]) -> Receipt:
        for index, record in enumerate(records):
            check_prediction(self.policies, index, record)
        return await self._group.submit(Submission(predictions=records))

    async def put_events(self, records: Sequence[EventRecord]) -> Receipt:
        return await self._group.submit(Submission(events=records))

    async def _produce(self, submissions: list[Submission]) -> list[Receipt | Exception]:
        predicted = sorted({r.prediction_id for s in submissions for r in s.events})  # the events' predictions
        use_cases: dict[str, str] = {}
        if predicted:
            async with self.runtime.db.read() as conn:
                use_cases = await lineage.use_cases_of(conn, predicted)
        outcomes: list[Receipt | Exception] = []
        predictions: list[Message] = []
        events: list[Message] = []
        for submission in submissions:
            try:
                for index, event in enumerate(submission.events):
                    check_event(self.policies, index, event, use_cases.get(event.prediction_id))
            except InvalidRecord as exc:
                outcomes.append(exc)
                continue
            predictions += [(r.prediction_id.encode(), encode(r), None) for r in submission.predictions]
            events += [(r.prediction_id.encode(), encode(r), None) for r in submission.events]
            outcomes.append(Receipt(accepted=submission.size, duplicates=None))
        await self.producer.send_all(
            [(self.settings.kafka_predictions_topic, predictions), (self.settings.kafka_events_topic, events)]
        )
        telemetry = self.runtime.telemetry
        for submission, outcome in zip(submissions, outcomes, strict=True):
            if isinstance(outcome, Receipt):
                for collection, records in (("predictions", submission.predictions), ("events", submission.events)):
                    if records:
                        telemetry.record(collection, len(records), 0)
        return outcomes
