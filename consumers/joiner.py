"""The joiner: consumes predictions and events from Kafka and applies them through the label core.

Checkpoint order, per batch (this is the only place it happens):
  1. decode; messages that can never become records are set aside for the dead-letter topic;
  2. one database transaction: partition progress, records, window sweep, stats; commit;
  3. dead letters produced and acknowledged;
  4. offsets committed (last offset + 1 per partition).
A crash between any two steps replays the batch: unique ids make the writes idempotent, so
nothing is counted twice and nothing is lost. Partitions change hands only between batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.exc import DBAPIError

from consumers.codec import PoisonRecord, decode_event, decode_prediction
from consumers.producer import Message, RecordProducer
from consumers.topics import ensure_topics
from service.config import Settings
from service.core.model import EventRecord, PredictionRecord
from service.core.policy import PolicySet
from service.core.validation import InvalidRecord
from service.store.database import Database
from service.store.ingest import DeadLetter, LabelContext, PartitionReport, UnitResult, ingest_partitions
from service.store.records import RecordConflict

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Received = Any  # aiokafka's ConsumerRecord
DB_ATTEMPTS = 8  # tries of one batch's transaction (deadlock, a race lost on a unique key)


def utcnow() -> datetime:
    return datetime.now(UTC)


def partition_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class Batch:
    """One getmany() result as records, with the message each came from."""

    def __init__(self) -> None:
        self.predictions: list[tuple[PredictionRecord, Received]] = []
        self.events: list[tuple[EventRecord, Received]] = []
        self.dead: list[tuple[Received, str]] = []

    def reject_index(self, collection: str, index: int, reason: str) -> None:
        pool: list[Any] = self.predictions if collection == "predictions" else self.events
        _, message = pool.pop(index)
        self.dead.append((message, f"{collection}: {reason}"))

    def reject_ids(self, id_field: str, ids: Sequence[str], reason: str) -> None:
        if id_field == "prediction_id":
            self.dead += [
                (m, f"{id_field} {r.prediction_id} {reason}") for r, m in self.predictions if r.prediction_id in ids
            ]
            self.predictions = [(r, m) for r, m in self.predictions if r.prediction_id not in ids]
        else:
            self.dead += [(m, f"{id_field} {r.event_id} {reason}") for r, m in self.events if r.event_id in ids]
            self.events = [(r, m) for r, m in self.events if r.event_id not in ids]

    def drop_reused_ids(self) -> None:
        """An id repeated in the batch with other content: the first occurrence stands, as it would
        had the two fallen in different batches; the later ones are dead letters."""
        self.predictions = self._first_wins(self.predictions, lambda r: r.prediction_id, "prediction_id")
        self.events = self._first_wins(self.events, lambda r: r.event_id, "event_id")

    def _first_wins(self, pool: list[Any], key: Callable[[Any], str], field: str) -> list[Any]:
        first: dict[str, Any] = {}
        kept = []
        for record, message in pool:
            # Record equality is content equality: received_at is left out, instants compare as such.
            if first.setdefault(key(record), record) == record:
                kept.append((record, message))
            else:
                self.dead.append((message, f"{field} {key(record)} re-used with different content"))
        return kept

    def event_times(self) -> dict[str, list[datetime]]:
        times: dict[str, list[datetime]] = defaultdict(list)
        for prediction, message in self.predictions:
            times[partition_name(message.topic, message.partition)].append(
                prediction.served_at or prediction.received_at  # type: ignore[arg-type]
            )
        for event, message in self.events:
            times[partition_name(message.topic, message.partition)].append(
                event.occurred_at or event.received_at  # type: ignore[arg-type]
            )
        return times


class _HandOver(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revoked partitions go only once the batch in flight is committed, database and offsets."""

    def __init__(self, in_flight: asyncio.Lock) -> None:
        self.in_flight = in_flight

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.in_flight:
            log.info("handing over %s", sorted(partition_name(tp.topic, tp.partition) for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned %s", sorted(partition_name(tp.topic, tp.partition) for tp in assigned))


class JoinerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records = Counter(
            "labelloop_joiner_records", "Records consumed, by topic.", ["topic"], registry=self.registry
        )
        self.dead_letters = Counter(
            "labelloop_joiner_dead_letters", "Records sent to the dead-letter topic.", registry=self.registry
        )
        self.batches = Counter("labelloop_joiner_batches", "Batches committed.", registry=self.registry)


class Joiner:
    def __init__(self, settings: Settings, policies: PolicySet, db: Database, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.context = LabelContext(
            policies=policies,
            allowed_disorder=settings.allowed_disorder,
            idle_timeout=settings.idle_timeout,
            orphan_ttl=settings.orphan_ttl,
            owner_timeout=settings.kafka_owner_timeout,
        )
        self.topics = (settings.kafka_predictions_topic, settings.kafka_events_topic)
        self.metrics = JoinerMetrics()
        self.dead_letter_producer = RecordProducer(settings, client_id="labelloop-joiner-dlq")
        self._in_flight = asyncio.Lock()

    def _consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        session_ms = int(s.kafka_session_timeout.total_seconds() * 1000)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers,
            group_id=s.kafka_group_id,
            client_id="labelloop-joiner",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 3),
        )
        consumer.subscribe(list(self.topics), listener=_HandOver(self._in_flight))
        return consumer

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_topics(self.settings)
        consumer = self._consumer()
        await consumer.start()
        try:
            while not stop.is_set():
                messages = await consumer.getmany(timeout_ms=500, max_records=self.settings.kafka_max_records)
                async with self._in_flight:
                    await self.process(consumer, messages)
        finally:
            await consumer.stop()
            await self.dead_letter_producer.stop()

    async def process(self, consumer: AIOKafkaConsumer, messages: dict[TopicPartition, list[Received]]) -> None:
        batch = self._decode(messages)
        reports = await self._reports(consumer, batch)
        unit = await self._apply(batch, reports, self._all_partitions(consumer))
        if batch.dead:
            await self._send_dead_letters(batch.dead)
        offsets = {tp: received[-1].offset + 1 for tp, received in messages.items() if received}
        if offsets:
            try:
                await consumer.commit(offsets)
            except CommitFailedError:
                # The group moved on: the new owner replays these records, which are idempotent.
                log.warning("offset commit lost to a rebalance; the new owner replays %s", offsets)
        for tp, received in messages.items():
            self.metrics.records.labels(tp.topic).inc(len(received))
        self.metrics.batches.inc()
        if unit.predictions.accepted or unit.events.accepted:
            log.debug("batch: %s predictions, %s events", unit.predictions, unit.events)

    def _decode(self, messages: dict[TopicPartition, list[Received]]) -> Batch:
        batch = Batch()
        for tp, received in messages.items():
            for message in received:
                try:
                    if tp.topic == self.settings.kafka_predictions_topic:
                        batch.predictions.append((decode_prediction(message.value, message.timestamp), message))
                    else:
                        batch.events.append((decode_event(message.value, message.timestamp), message))
                except PoisonRecord as exc:
                    batch.dead.append((message, str(exc)))
        batch.drop_reused_ids()
        return batch

    async def _reports(self, consumer: AIOKafkaConsumer, batch: Batch) -> dict[str, PartitionReport]:
        times = batch.event_times()
        reports = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)  # from the last fetch; None before any
            caught_up = end is not None and await consumer.position(tp) >= end
            name = partition_name(tp.topic, tp.partition)
            reports[name] = PartitionReport(event_times=times.get(name, []), caught_up=caught_up)
        return reports

    def _all_partitions(self, consumer: AIOKafkaConsumer) -> list[str]:
        """Every partition of both topics, owned here or not; empty while metadata is unknown."""
        names = []
        for topic in self.topics:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                return []
            names += [partition_name(topic, p) for p in sorted(partitions)]
        return names

    async def _apply(self, batch: Batch, reports: dict[str, PartitionReport], all_partitions: list[str]) -> UnitResult:
        failures = 0
        while True:
            try:
                async with self.db.write() as conn:
                    return await ingest_partitions(
                        conn,
                        self.context,
                        self.clock(),
                        reports,
                        all_partitions,
                        predictions=[r for r, _ in batch.predictions],
                        events=[r for r, _ in batch.events],
                        dead_letters=[DeadLetter(m.topic, m.partition, m.offset, reason) for m, reason in batch.dead],
                    )
            except InvalidRecord as exc:
                batch.reject_index(exc.loc[0], exc.index, str(exc).split(": ", 1)[1])
            except RecordConflict as exc:
                batch.reject_ids(exc.field, exc.ids, exc.reason)
            except DBAPIError as exc:
                failures += 1
                if failures >= DB_ATTEMPTS:
                    raise
                log.warning("batch transaction failed (%s), retry %d: %s", type(exc.orig).__name__, failures, exc)
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))

    async def _send_dead_letters(self, dead: list[tuple[Received, str]]) -> None:
        messages: list[Message] = []
        for message, reason in dead:
            log.warning("dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
            headers = [
                ("labelloop-reason", reason.encode()),
                ("labelloop-source", f"{message.topic}[{message.partition}]@{message.offset}".encode()),
            ]
            messages.append((message.key, message.value or b"", headers))
        await self.dead_letter_producer.send_all(self.settings.kafka_dlq_topic, messages)
        self.metrics.dead_letters.inc(len(dead))
