"""Producing records with the broker's acknowledgement, or a clear failure within a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from service.config import Settings

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time; nothing may be reported as stored."""


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

    async def send_all(self, topic: str, messages: Sequence[Message]) -> None:
        """Return once the broker acknowledged every message (acks=all); else BrokerUnavailable."""
        try:
            async with asyncio.timeout(self.settings.kafka_produce_timeout.total_seconds()):
                producer = await self._ready()
                acks = [
                    await producer.send(topic, value=value, key=key, headers=headers)
                    for key, value, headers in messages
                ]
                await asyncio.gather(*acks)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("producing to %s failed: %r; the producer will be rebuilt", topic, exc)
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
