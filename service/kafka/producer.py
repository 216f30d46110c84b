"""Producing records with the broker's acknowledgement, or a clear failure within a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, RequestTimedOutError

from service.config import Settings
from service.kafka.errors import BrokerUnavailable, IdempotenceRefused

log = logging.getLogger(__name__)


Message = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]  # key, value, headers


class RecordProducer:
    """One producer, started on first use and rebuilt after a failure, so a process recovers by
    itself when the broker comes back."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def _ready(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                s = self.settings
                producer = AIOKafkaProducer(
                    bootstrap_servers=s.kafka_bootstrap_servers,
                    client_id=self.client_id,
                    acks="all",
                    enable_idempotence=s.kafka_idempotence,
                    compression_type=s.kafka_compression,
                    linger_ms=int(s.kafka_linger.total_seconds() * 1000),
                    request_timeout_ms=int(s.kafka_produce_timeout.total_seconds() * 1000),
                    max_batch_size=1 << 20,
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def check(self) -> None:
        """Start now, at start-up: a broker that refuses idempotent producers (InitProducerId
        fails, as with Tansu) is a configuration error, said once here instead of a 503 on every
        request. A broker that cannot be reached yet is not: the producer starts on first use."""
        try:
            async with asyncio.timeout(self.settings.kafka_produce_timeout.total_seconds()):
                await self._ready()
        except (KafkaConnectionError, RequestTimedOutError, TimeoutError, OSError) as exc:
            log.warning("Kafka not reachable at start-up (%r); the producer starts on first use", exc)
        except KafkaError as exc:
            if not self.settings.kafka_idempotence:
                raise
            raise IdempotenceRefused(
                f"the broker at {self.settings.kafka_bootstrap_servers} refused an idempotent producer "
                f"(InitProducerId: {exc!r}). Apache Kafka supports them; for a broker that does not "
                "(Tansu), set LABELLOOP_KAFKA_IDEMPOTENCE=false"
            ) from exc

    async def fault(self, topics: Sequence[str], within_s: float) -> str | None:
        """Why records could not be produced now (a broker unreachable, a topic missing or a
        partition without leader), from a metadata request; None when they could."""
        try:
            async with asyncio.timeout(within_s):
                producer = await self._ready()
                cluster = await producer.client.fetch_all_metadata()
        except (KafkaError, TimeoutError, OSError) as exc:
            await self._discard()
            return f"Kafka unreachable: {type(exc).__name__}"
        for topic in topics:
            partitions = cluster.partitions_for_topic(topic)
            if not partitions:
                return f"Kafka topic {topic} does not exist"
            if len(cluster.available_partitions_for_topic(topic) or ()) < len(partitions):
                return f"Kafka topic {topic} has partitions without a leader"
        return None

    async def send_all(self, batches: Sequence[tuple[str, Sequence[Message]]]) -> None:
        """Send (topic, messages) pairs; return once the broker acknowledged every message
        (acks=all), else raise BrokerUnavailable."""
        try:
            async with asyncio.timeout(self.settings.kafka_produce_timeout.total_seconds()):
                producer = await self._ready()
                acks = [
                    await producer.send(topic, value=value, key=key, headers=headers)
                    for topic, messages in batches
                    for key, value, headers in messages
                ]
                await asyncio.gather(*acks)
        except (KafkaError, TimeoutError, OSError) as exc:
            topics = sorted({topic for topic, messages in batches if messages})
            log.warning("producing to %s failed: %r; the producer will be rebuilt", topics, exc)
            await self._discard()
            raise BrokerUnavailable(f"Kafka did not acknowledge the records: {exc!r}") from exc

    async def _discard(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await producer.stop()

    async def stop(self) -> None:
        await self._discard()
