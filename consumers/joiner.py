"""The joiner: consumes predictions and events from Kafka and applies them through the label core.

Checkpoint order, per batch (this is the only place it happens):
  1. decode; messages that can never become records are set aside for the dead-letter topic; the
     records ahead in event time of a partition not read to its end wait (consumers/sync.py);
  2. one database transaction: partition progress, records, window sweep, stats; commit;
  3. dead letters produced and acknowledged;
  4. offsets committed (last applied offset + 1 per partition).
A crash between any two steps replays the batch: unique ids make the writes idempotent, so
nothing is counted twice and nothing is lost. Partitions change hands only between batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.exc import DBAPIError

from consumers.sync import InStep
from service.clock import Clock, utcnow
from service.config import Settings
from service.core.model import EventRecord, PredictionRecord, event_time
from service.core.policy import PolicySet
from service.core.privacy import scrub
from service.core.validation import InvalidRecord
from service.kafka.codec import PoisonRecord, decode_event, decode_prediction
from service.kafka.producer import Message, RecordProducer
from service.kafka.topics import ensure_topics
from service.store.database import Database
from service.store.ingest import DeadLetter, LabelContext, PartitionReport, Submission, UnitResult, ingest_partitions
from service.store.records import RecordConflict

log = logging.getLogger(__name__)

Received = Any  # aiokafka's ConsumerRecord
Fetched = tuple[PredictionRecord | EventRecord | str, Received]  # a record, or why it is a dead letter
DB_ATTEMPTS = 8  # tries of one batch's transaction (deadlock, a race lost on a unique key)


def partition_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class Batch:
    """The records applied in one transaction, with the message each came from."""

    def __init__(self, fetched: Iterable[Fetched]) -> None:
        self.predictions: list[tuple[PredictionRecord, Received]] = []
        self.events: list[tuple[EventRecord, Received]] = []
        self.dead: list[tuple[Received, str]] = []
        for record, message in fetched:
            if isinstance(record, PredictionRecord):
                self.predictions.append((record, message))
            elif isinstance(record, EventRecord):
                self.events.append((record, message))
            else:
                self.dead.append((message, record))
        self.drop_reused_ids()

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

    def event_times(self, now: datetime) -> dict[str, list[datetime]]:
        times: dict[str, list[datetime]] = defaultdict(list)
        records: list[tuple[PredictionRecord | EventRecord, Received]] = [*self.predictions, *self.events]
        for record, message in records:
            times[partition_name(message.topic, message.partition)].append(event_time(record, now))
        return times


class _HandOver(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revoked partitions go only once the batch in flight is committed, database and offsets; what
    was fetched from them and not applied is dropped, for their next owner to read again."""

    def __init__(self, in_flight: asyncio.Lock, in_step: InStep[TopicPartition, Fetched]) -> None:
        self.in_flight = in_flight
        self.in_step = in_step

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.in_flight:
            self.in_step.forget(revoked)
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
        self.lag = Gauge(
            "labelloop_joiner_consumer_lag_records",
            "Records in the broker beyond this joiner's position, per owned partition (at its last fetch).",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.waiting = Gauge(
            "labelloop_joiner_waiting_records",
            "Records fetched and not yet applied: ahead in event time of a partition not read to its end.",
            registry=self.registry,
        )


class Joiner:
    def __init__(self, settings: Settings, policies: PolicySet, db: Database, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.context = LabelContext.from_settings(settings, policies)
        self.limits = settings.limits
        self.policies = policies
        self.topics = (settings.kafka_predictions_topic, settings.kafka_events_topic)
        self.metrics = JoinerMetrics()
        self.dead_letter_producer = RecordProducer(settings, client_id="labelloop-joiner-dlq")
        self._in_flight = asyncio.Lock()
        self._in_step: InStep[TopicPartition, Fetched] = InStep()
        self._more_due = False  # the last sweep stopped at its limit: poll again at once
        self._lag_reported: set[tuple[str, str]] = set()  # partitions whose lag the gauge shows

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
        consumer.subscribe(list(self.topics), listener=_HandOver(self._in_flight, self._in_step))
        return consumer

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_topics(self.settings)
        await self.dead_letter_producer.check()
        consumer = self._consumer()
        await consumer.start()
        try:
            while not stop.is_set():
                # Partitions with records waiting are not fetched further: what waits stays bounded.
                idle = [tp for tp in consumer.assignment() if not self._in_step.waiting(tp)]
                messages = await consumer.getmany(
                    *idle, timeout_ms=0 if self._more_due else 500, max_records=self.settings.kafka_max_records
                )
                async with self._in_flight:
                    await self.process(consumer, messages)
        finally:
            await consumer.stop()
            await self.dead_letter_producer.stop()

    async def process(self, consumer: AIOKafkaConsumer, messages: dict[TopicPartition, list[Received]]) -> None:
        # When the partitions' ends were looked at: a caught-up report speaks of then, not of the
        # (perhaps retried, later) transaction, by when more may have arrived.
        looked_at = self.clock()
        for tp, received in messages.items():
            self._in_step.add(tp, (self._decode(tp, message) for message in received))
        unread = await self._unread(consumer)
        ready = self._in_step.take(unread)
        batch = Batch(item for applied in ready.values() for item in applied)
        reports = self._reports(consumer, batch, unread, looked_at)
        unit = await self._apply(batch, reports, self._all_partitions(consumer))
        self._more_due = unit.more_due
        if batch.dead:
            await self._send_dead_letters(batch.dead)
        offsets = {tp: applied[-1][1].offset + 1 for tp, applied in ready.items()}
        if offsets:
            try:
                await consumer.commit(offsets)
            except CommitFailedError:
                # The group moved on: the new owner replays these records, which are idempotent.
                log.warning("offset commit lost to a rebalance; the new owner replays %s", offsets)
        for tp, applied in ready.items():
            self.metrics.records.labels(tp.topic).inc(len(applied))
        self.metrics.waiting.set(sum(self._in_step.waiting(tp) for tp in consumer.assignment()))
        self.metrics.batches.inc()
        (result,) = unit.results
        if result.predictions.accepted or result.events.accepted:
            log.debug("batch: %s predictions, %s events", result.predictions, result.events)

    def _decode(self, tp: TopicPartition, message: Received) -> tuple[datetime | None, Fetched]:
        """The message as a record and its event time; a poison message has none."""
        try:
            record: PredictionRecord | EventRecord
            if tp.topic == self.settings.kafka_predictions_topic:
                decoded = decode_prediction(message.value, message.timestamp, self.limits)
                # Apps producing straight to Kafka skip the API: their features are scrubbed here.
                (record,) = scrub(self.policies, [decoded], self.settings.hash_key)
            else:
                record = decode_event(message.value, message.timestamp, self.limits)
        except PoisonRecord as exc:
            return None, (str(exc), message)
        return event_time(record, self.clock()), (record, message)

    async def _unread(self, consumer: AIOKafkaConsumer) -> set[TopicPartition]:
        """Owned partitions with records in the broker beyond what was fetched."""
        unread = set()
        owned = consumer.assignment()
        for tp in owned:
            end = consumer.highwater(tp)  # from the last fetch; None before any
            if end is None:
                unread.add(tp)
                continue
            position = await consumer.position(tp)
            if position < end:
                unread.add(tp)
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
        for labels in list(self._lag_reported - {(tp.topic, str(tp.partition)) for tp in owned}):
            self.metrics.lag.remove(*labels)  # handed over: its new owner reports it
        self._lag_reported = {(tp.topic, str(tp.partition)) for tp in owned if consumer.highwater(tp) is not None}
        return unread

    def _reports(
        self, consumer: AIOKafkaConsumer, batch: Batch, unread: set[TopicPartition], looked_at: datetime
    ) -> dict[str, PartitionReport]:
        times = batch.event_times(looked_at)
        reports = {}
        for tp in consumer.assignment():
            # Records still waiting are not applied yet: the partition is not at its end.
            caught_up = tp not in unread and not self._in_step.waiting(tp)
            name = partition_name(tp.topic, tp.partition)
            reports[name] = PartitionReport(times.get(name, []), caught_up, looked_at)
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
                        Submission([r for r, _ in batch.predictions], [r for r, _ in batch.events]),
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
        await self.dead_letter_producer.send_all([(self.settings.kafka_dlq_topic, messages)])
        self.metrics.dead_letters.inc(len(dead))
