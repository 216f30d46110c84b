"""Kafka mode: validate exactly as the embedded mode does, then produce keyed by prediction_id and
answer only once the broker acknowledged every record."""

from __future__ import annotations

from collections.abc import Sequence

from consumers.codec import encode
from consumers.producer import RecordProducer
from service.api.sinks import Receipt
from service.api.telemetry import Telemetry
from service.config import Settings
from service.core.model import EventRecord, PredictionRecord
from service.core.policy import PolicySet
from service.core.validation import check_event, check_prediction
from service.store import queries
from service.store.database import Database


class KafkaSink:
    def __init__(
        self, settings: Settings, policies: PolicySet, db: Database, producer: RecordProducer, telemetry: Telemetry
    ) -> None:
        self.settings = settings
        self.policies = policies
        self.db = db
        self.producer = producer
        self.telemetry = telemetry

    async def put_predictions(self, records: Sequence[PredictionRecord]) -> Receipt:
        for index, record in enumerate(records):
            check_prediction(self.policies, index, record)
        messages = [(r.prediction_id.encode(), encode(r), None) for r in records]
        await self.producer.send_all(self.settings.kafka_predictions_topic, messages)
        self.telemetry.record("predictions", len(records), 0)
        return Receipt(accepted=len(records), duplicates=None)

    async def put_events(self, records: Sequence[EventRecord]) -> Receipt:
        async with self.db.read() as conn:
            use_cases = await queries.use_cases_of(conn, sorted({r.prediction_id for r in records}))
        for index, record in enumerate(records):
            check_event(self.policies, index, record, use_cases.get(record.prediction_id))
        messages = [(r.prediction_id.encode(), encode(r), None) for r in records]
        await self.producer.send_all(self.settings.kafka_events_topic, messages)
        self.telemetry.record("events", len(records), 0)
        return Receipt(accepted=len(records), duplicates=None)
